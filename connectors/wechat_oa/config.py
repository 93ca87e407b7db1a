"""A WeChat Official Account channel's settings: the developer credentials (开发者ID/密码) and the
server settings (服务器配置) of the WeChat admin, each checked. Credentials are plain strings so
that the channel store can keep them (`model_dump(mode="json")` would write SecretStr as
"**********"); they are left out of the repr, and no error repeats an input."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class WechatOAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    app_id: str = Field(pattern=r"^wx[0-9a-f]{16}$", description="AppID (开发者ID)")
    app_secret: str = Field(pattern=r"^[0-9A-Za-z]{32}$", repr=False, description="AppSecret (开发者密码)")
    token: str = Field(pattern=r"^[0-9A-Za-z]{3,32}$", repr=False,
                       description="Token (令牌) of the server settings: 3-32 letters or digits")
    encoding_aes_key: str | None = Field(default=None, pattern=r"^[0-9A-Za-z]{43}$", repr=False,
                                         description="EncodingAESKey: set = safe mode (安全模式), required")
    original_id: str | None = Field(default=None, pattern=r"^gh_[0-9a-f]{12}$",
                                    description="原始ID: when set, messages to another account are refused")
    welcome_text: str = Field(default="", max_length=600, description="the answer to a new follower")
    api_base: str = Field(default="https://api.weixin.qq.com", pattern=r"^https?://[^\s/]+$")
    max_skew_s: int = Field(default=300, ge=30, le=3600,
                            description="a callback signed further from now is refused (stale or replayed)")
    timeout_s: float = Field(default=4.0, gt=0, le=30, description="per call to WeChat's API")
