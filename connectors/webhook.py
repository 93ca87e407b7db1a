"""The generic webhook / API channel: any platform (Douyin, Taobao, JD, Shopee, TikTok Shop ...)
bridged by the merchant's own middleware through a signed HTTP API (docs/connectors/webhook.md).

In: the middleware POSTs `{"messages": [...], "receipts": [...]}` to the channel's hook URL.
Out: peakdesk POSTs each answer to the channel's `send_url` and takes `{"message_id"}` back.
Both ways are signed like peakdesk's webhooks: `X-Peakdesk-Signature: t=<unix s>,v1=<hex
HMAC-SHA256(secret, "<t>." + raw body)>`, refused when older than `max_age_s` (replays).
"""
from __future__ import annotations

import base64
import re
import time
from typing import Annotated, ClassVar, Literal

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from storage.webhooks import sign, verify

from .base import Inbound, Outbound, Receipt, Refused, SendFailed, WebhookRequest, WebhookResult

MAX_BODY = 1024 * 1024
MAX_MEDIA = 20 * 1024 * 1024
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Config(_Strict):
    secret: Annotated[str, StringConstraints(min_length=32, max_length=256)]
    send_url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#]+(/[^\s#]*)?$", max_length=1000)]
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 5.0
    max_age_s: Annotated[int, Field(ge=30, le=3600)] = 300


class Media(_Strict):
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2048)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    mime: Annotated[str, StringConstraints(pattern=r"^[a-z]+/[A-Za-z0-9.+-]{1,100}$")]


class Text(_Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")]


class Message(_Strict):
    customer_id: Id
    message_id: Id
    kind: Literal["text", "image", "audio", "video", "file"]
    content: dict
    name: Annotated[str, StringConstraints(max_length=100)] = ""
    thread: Annotated[str, StringConstraints(max_length=128)] = ""
    sent_at: Annotated[int, Field(ge=0)] = 0                   # ms
    reply_to: Annotated[dict, Field(max_length=20)] = {}


class ReceiptIn(_Strict):
    message_id: Id
    status: Literal["sent", "delivered", "read", "failed"]
    error: Annotated[str, StringConstraints(max_length=300)] = ""


class Callback(_Strict):
    messages: Annotated[list[Message], Field(max_length=100)] = []
    receipts: Annotated[list[ReceiptIn], Field(max_length=500)] = []


class WebhookConnector:
    name: ClassVar[str] = "webhook"
    Config: ClassVar[type[BaseModel]] = Config

    def __init__(self, config: Config, http: httpx.AsyncClient, media=None, state=None):
        self.config, self.http, self.media = config, http, media

    # -- in ----------------------------------------------------------------------------------------
    async def webhook(self, request: WebhookRequest) -> WebhookResult:
        if request.method != "POST":
            raise Refused("method: the webhook channel takes POST", 405)
        if len(request.body) > MAX_BODY:
            raise Refused(f"body: larger than {MAX_BODY} bytes", 413)
        header = request.headers.get("x-peakdesk-signature", "")
        if not header:
            raise Refused("signature: X-Peakdesk-Signature is missing", 401)
        if not _checkable(header) or not verify(self.config.secret, header, request.body, self.config.max_age_s):
            raise Refused("signature: does not match the body, or its t is older than max_age_s", 401)
        try:
            callback = Callback.model_validate(orjson.loads(request.body))
        except orjson.JSONDecodeError:
            raise Refused("body: not JSON") from None
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise Refused(f"body.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        messages = [await self._inbound(i, m) for i, m in enumerate(callback.messages)]
        receipts = [Receipt(r.message_id, r.status, r.error) for r in callback.receipts]
        return WebhookResult(inbound=messages, receipts=receipts, body=b'{"ok":true}',
                             content_type="application/json")

    async def _inbound(self, i: int, m: Message) -> Inbound:
        content = await self._content(i, m)
        return Inbound(external_id=m.customer_id, message_id=m.message_id, kind=m.kind, content=content,
                       name=m.name, thread=m.thread, at_ms=m.sent_at, reply_to=m.reply_to)

    async def _content(self, i: int, m: Message) -> dict:
        try:
            if m.kind == "text":
                return Text.model_validate(m.content).model_dump()
            media = Media.model_validate(m.content)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            raise Refused(f"body.messages.{i}.content.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        if self.media is None:
            raise Refused(f"body.messages.{i}: this channel cannot take media")
        try:
            response = await self.http.get(media.url, timeout=self.config.timeout_s)
        except httpx.HTTPError as exc:
            raise Refused(f"body.messages.{i}.content.url: could not be fetched ({type(exc).__name__})", 502) from None
        if response.status_code != 200 or len(response.content) > MAX_MEDIA:
            raise Refused(f"body.messages.{i}.content.url: answered {response.status_code}, "
                          f"{len(response.content)} bytes (at most {MAX_MEDIA})", 502)
        try:
            return await self.media.store(media.name, media.mime, response.content)
        except ValueError as exc:   # the attachment store's refusal: "mime: the content is not image/png"
            raise Refused(f"body.messages.{i}.content.{exc}") from None

    # -- out ---------------------------------------------------------------------------------------
    async def send(self, message: Outbound) -> str:
        content = dict(message.content)
        if message.kind in ("image", "audio", "video", "file") and self.media is not None:
            meta, data = await self.media.read(content["attachment_id"])
            content["data"] = base64.b64encode(data).decode()
        body = orjson.dumps({"key": message.key, "to": message.external_id, "thread": message.thread,
                             "reply_to": message.reply_to, "kind": message.kind, "content": content,
                             "sent_at": int(time.time() * 1000)})
        try:
            response = await self.http.post(self.config.send_url, content=body, timeout=self.config.timeout_s, headers={
                "Content-Type": "application/json", "X-Peakdesk-Signature": sign(self.config.secret, body),
                "X-Peakdesk-Delivery": message.key})
        except httpx.HTTPError as exc:
            raise SendFailed(f"the merchant's middleware could not be reached: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise SendFailed(f"the merchant's middleware answered {response.status_code}")
        if not 200 <= response.status_code < 300:
            raise SendFailed(f"the merchant's middleware refused it ({response.status_code}): "
                             f"{_error_of(response)}", retry=False)
        try:
            return str(response.json()["message_id"])[:200]
        except (ValueError, KeyError, TypeError, RecursionError):
            return message.key      # accepted without an id of its own


def _checkable(header: str) -> bool:
    """A header storage.webhooks.verify can take: ASCII (hmac.compare_digest raises TypeError on
    other text) and a `t` of at most 12 digits (a longer one overflows its float arithmetic)."""
    if not header.isascii() or len(header) > 1024:
        return False
    t = [part[2:] for part in header.split(",") if part.startswith("t=")]
    return bool(t) and re.fullmatch(r"[0-9]{1,12}", t[-1]) is not None


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", ""))[:200]
    except (ValueError, AttributeError, RecursionError):
        return response.text[:200]


Connector = WebhookConnector
