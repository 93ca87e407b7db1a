"""The WeChat Official Account connector (微信公众号): docs/connectors/wechat_oa.md."""
from .connector import WechatOAConfig, WechatOAConnector

__all__ = ["WechatOAConfig", "WechatOAConnector"]
