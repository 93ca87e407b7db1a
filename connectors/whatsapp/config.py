"""A WhatsApp channel's settings: the Cloud API phone number it answers for, the Meta app that
signs its webhooks, and the system-user token it sends with. Errors name the field."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

_DIGITS = r"^[0-9]{1,32}$"


class WhatsAppConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone_number_id: str = Field(pattern=_DIGITS)        # WhatsApp Manager → API setup → "Phone number ID"
    # the WhatsApp Business Account (WABA) id; when set, a notification of another account is refused
    business_account_id: str = Field(default="", pattern=r"^([0-9]{1,32})?$")
    app_secret: str = Field(min_length=16, max_length=128, repr=False)     # App settings → Basic → App secret
    verify_token: str = Field(min_length=8, max_length=256, repr=False)    # what the merchant types in "Verify token"
    access_token: str = Field(min_length=20, max_length=1024, pattern=r"^[A-Za-z0-9_\-|.]+$", repr=False)
    # A 60-day system-user token (Meta now suggests these) is renewed through
    # GET /oauth/access_token?grant_type=fb_exchange_token&set_token_expires_in_60_days=true, which
    # needs the app id. An expired one can't be renewed: renew well before, `token_renew_days` ahead.
    token_expires: bool = False
    app_id: str = Field(default="", pattern=r"^([0-9]{1,32})?$")
    token_renew_days: int = Field(default=30, ge=1, le=59)
    api_base: str = Field(default="https://graph.facebook.com", pattern=r"^https?://[^\s/?#]+$", max_length=200)
    api_version: str = Field(default="v23.0", pattern=r"^v[0-9]{1,3}\.[0-9]$")
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    # All media of one notification must be fetched within this: WhatsApp gives up on (and later
    # retries) a webhook that isn't answered in time, so this stays well under its limit.
    media_budget_s: float = Field(default=12.0, gt=0, le=20)

    @model_validator(mode="after")
    def _renewal_needs_app_id(self) -> "WhatsAppConfig":
        if self.token_expires and not self.app_id:
            raise ValueError("app_id: needed to renew an expiring access token (token_expires is on)")
        return self

    def url(self, *path: str) -> str:
        return "/".join((self.api_base, self.api_version) + path)
