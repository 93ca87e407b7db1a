"""A WeCom customer-service (微信客服) channel's settings: what the merchant copies from the WeCom
admin console (docs/connectors/wecom_kf.md). Errors name the field and never echo a secret."""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ..wxcrypt import CryptoError, aes_key

_OPEN_KFID = r"^[A-Za-z0-9_-]{1,64}$"


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # errors never echo a secret

    corp_id: str = Field(pattern=r"^[A-Za-z0-9_-]{4,64}$",
                         description="企业ID (My Company → Company ID), e.g. ww0123456789abcdef")
    secret: SecretStr = Field(min_length=1, max_length=128, description="the 微信客服 app's Secret (not another app's)")
    token: str = Field(pattern=r"^[A-Za-z0-9]{1,32}$", description="the callback Token (API 接收消息 settings)")
    encoding_aes_key: SecretStr = Field(description="the callback EncodingAESKey: 43 characters")
    # Customer-service accounts this channel serves; empty: every account of the corp.
    open_kfids: tuple[str, ...] = Field(default=(), max_length=100)
    api_base: str = Field(default="https://qyapi.weixin.qq.com", pattern=r"^https?://[^\s/?#]+(:\d+)?$")
    # WeCom signs the timestamp; a callback further than this from our clock is refused as stale.
    max_clock_skew_s: int = Field(default=300, ge=30, le=3600)
    # A kf callback is ~500 bytes (an encrypted <xml> of 6 short fields); 64 KiB is generous.
    max_body_bytes: int = Field(default=65536, ge=1024, le=1 << 20)
    timeout_s: float = Field(default=10.0, gt=0, le=60)
    # sync_msg pages (1000 messages each) read per callback; the rest wait for the next callback.
    max_pages: int = Field(default=10, ge=1, le=100)

    @field_validator("encoding_aes_key")
    @classmethod
    def _aes_key(cls, value: SecretStr) -> SecretStr:
        try:
            aes_key(value.get_secret_value())
        except CryptoError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("open_kfids")
    @classmethod
    def _open_kfids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not re.match(_OPEN_KFID, v)]
        if bad:
            raise ValueError(f"not an open_kfid: {bad[0]!r}")
        return value

    def key(self) -> bytes:
        return aes_key(self.encoding_aes_key.get_secret_value())

    def serves(self, open_kfid: str) -> bool:
        return not self.open_kfids or open_kfid in self.open_kfids
