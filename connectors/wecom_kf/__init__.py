"""WeCom customer service (企业微信 · 微信客服) as a peakdesk channel: entry point
`wecom_kf = "connectors.wecom_kf:WeComKfConnector"`. See docs/connectors/wecom_kf.md."""
from .config import Config
from .connector import WeComKfConnector

__all__ = ["Config", "WeComKfConnector"]
