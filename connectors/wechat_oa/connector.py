"""The WeChat Official Account channel (微信公众号): customers' messages arrive at the account's
server URL (plain, or encrypted in safe mode), agents answer through the customer-service message
API (客服消息) within WeChat's 48-hour window. Events are not customer messages: `subscribe` is
answered with the channel's welcome text when it has one (a passive reply), the others with
"success"."""
from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import ClassVar

import httpx
from pydantic import BaseModel

from connectors.base import Media, Outbound, Refused, State, WebhookRequest, WebhookResult
from connectors.wxcrypt import signature

from . import messages
from .api import WechatApi
from .config import WechatOAConfig
from .crypto import MessageCrypt, check_signature
from .inbound import inbound
from .outbound import payload

MAX_BODY = 64 * 1024      # WeChat's callbacks are a few hundred bytes; encrypted ones about 4/3 of that
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_NONCE = re.compile(r"^[A-Za-z0-9]{1,64}$")
_ECHOSTR = re.compile(r"^[A-Za-z0-9_-]{1,128}$")   # WeChat sends digits: nothing else is echoed back


class WechatOAConnector:
    name: ClassVar[str] = "wechat_oa"
    Config: ClassVar[type[BaseModel]] = WechatOAConfig

    def __init__(self, config: WechatOAConfig, http: httpx.AsyncClient, media: Media | None = None,
                 state: State | None = None, *, clock: Callable[[], float] = time.time):
        self.config, self.media, self.clock = config, media, clock
        self.token = config.token
        key = config.encoding_aes_key
        self.crypt = MessageCrypt(key, config.app_id) if key is not None else None
        self.api = WechatApi(http, config.api_base, config.app_id, config.app_secret, state, clock, config.timeout_s)

    # -- in ----------------------------------------------------------------------------------------
    async def webhook(self, request: WebhookRequest) -> WebhookResult:
        if len(request.body) > MAX_BODY:
            raise Refused(f"body: {len(request.body)} bytes, more than {MAX_BODY}", 413)
        timestamp, nonce = self._signed_time(request.query)
        if request.method == "GET":
            return self._verify_url(request.query, timestamp, nonce)
        if request.method != "POST":
            raise Refused(f"method: {request.method} is not GET or POST", 405)
        msg = messages.check(self._open(request, timestamp, nonce), self.config.original_id)
        if msg["MsgType"] == "event":
            return self._event(msg)
        return WebhookResult(inbound=await inbound(msg, self.api, self.media))

    def _signed_time(self, query: dict[str, str]) -> tuple[str, str]:
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not _TIMESTAMP.match(timestamp):
            raise Refused("timestamp: missing or not a number", 400)
        if not _NONCE.match(nonce):
            raise Refused("nonce: missing or not letters and digits", 400)
        skew = int(self.clock()) - int(timestamp)
        if abs(skew) > self.config.max_skew_s:
            raise Refused(f"timestamp: {skew:+d} s from now, beyond {self.config.max_skew_s} s (stale or replayed)",
                          403)
        return timestamp, nonce

    def _verify_url(self, query: dict[str, str], timestamp: str, nonce: str) -> WebhookResult:
        """The server-URL check of the WeChat admin: the same in plain and safe mode."""
        check_signature(query.get("signature", ""), self.token, timestamp, nonce)
        echostr = query.get("echostr", "")
        if not _ECHOSTR.match(echostr):
            raise Refused("echostr: missing or not letters and digits", 400)
        return WebhookResult(body=echostr.encode())

    def _open(self, request: WebhookRequest, timestamp: str, nonce: str) -> dict[str, str]:
        """The message's fields, its signature checked and, in safe mode, decrypted."""
        encrypted = request.query.get("encrypt_type", "raw") == "aes"
        if self.crypt is None:
            if encrypted:
                raise Refused("encrypt_type: the message is encrypted but the channel has no encoding_aes_key", 400)
            check_signature(request.query.get("signature", ""), self.token, timestamp, nonce)
            return messages.parse(request.body)
        if not encrypted:
            raise Refused("encrypt_type: a plain message to a channel in safe mode", 403)
        outer = messages.parse(request.body)
        if not outer.get("Encrypt"):
            raise Refused("Encrypt: missing", 400)
        check_signature(request.query.get("msg_signature", ""), self.token, timestamp, nonce, outer["Encrypt"],
                        name="msg_signature")
        inner = messages.parse(self.crypt.decrypt(outer["Encrypt"]).encode(), "Encrypt")
        if outer.get("ToUserName") and inner.get("ToUserName") != outer["ToUserName"]:
            raise Refused("ToUserName: the encrypted message names another account than its envelope", 400)
        return inner

    def _event(self, msg: dict[str, str]) -> WebhookResult:
        if msg["Event"] != "subscribe" or not self.config.welcome_text:
            return WebhookResult()
        now = str(int(self.clock()))
        xml = messages.text_reply(msg["FromUserName"], msg["ToUserName"], int(now), self.config.welcome_text)
        if self.crypt is not None:
            encrypted, nonce = self.crypt.encrypt(xml), str(secrets.randbelow(10**10))
            xml = messages.encrypted_reply(encrypted, signature(self.token, now, nonce, encrypted), now, nonce)
        return WebhookResult(body=xml.encode(), content_type="application/xml; charset=utf-8")

    # -- out ---------------------------------------------------------------------------------------
    async def send(self, message: Outbound) -> str:
        """Through the customer-service message API. WeChat returns no message id for these (and
        sends no receipts): the id is peakdesk's own key, unless WeChat ever gives a msgid."""
        body = await payload(message, self.api, self.media)
        answer = await self.api.post_json("/cgi-bin/message/custom/send", body)
        return str(answer.get("msgid") or message.key)
