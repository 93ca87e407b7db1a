"""The WhatsApp Business Cloud API as a peakdesk channel (docs/connectors/whatsapp.md).

Inbound: `webhook` answers the verification GET and reads signed POST notifications; media are
downloaded and stored before it returns (a transient failure answers 503: WhatsApp resends).
Dedupe on `Inbound.message_id` — the wamid — since WhatsApp resends what isn't answered 200 in
time. Outbound: `send` refuses early what WhatsApp's 24-hour window would refuse, uploads media,
and returns the wamid; `SendFailed.retry` follows the Graph API's error code.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar

import httpx
from pydantic import BaseModel

from connectors.base import Media, Outbound, Refused, SendFailed, State, WebhookRequest, WebhookResult
from . import inbound, outbound
from .config import WhatsAppConfig
from .errors import WINDOW_CLOSED, GraphError
from .graph import Graph
from .media_in import MediaFetcher
from .tokens import Tokens

WINDOW_MS = 24 * 3600 * 1000
MEDIA_KINDS = ("image", "audio", "video", "file")
_WA_ID_DIGITS = 20


class WhatsApp:
    name: ClassVar[str] = "whatsapp"
    rate_per_s: ClassVar[int] = 80     # the Cloud API's default throughput per number
    Config: ClassVar[type[BaseModel]] = WhatsAppConfig

    def __init__(self, config: Any, http: httpx.AsyncClient, media: Media | None = None,
                 state: State | None = None, *, clock: Callable[[], float] = time.time):
        self.config = config if isinstance(config, WhatsAppConfig) else WhatsAppConfig.model_validate(config)
        self.media, self.clock = media, clock
        self.graph = Graph(self.config, http, Tokens(self.config, http, state, clock))
        self.fetcher = MediaFetcher(self.graph, media, self.config.media_budget_s)

    async def webhook(self, request: WebhookRequest) -> WebhookResult:
        if request.method == "GET":
            return inbound.answer_challenge(self.config, request.query)
        if request.method != "POST":
            raise Refused(f"method {request.method}: WhatsApp sends GET (verification) and POST only", 405)
        items, receipts = inbound.convert(inbound.read(self.config, request, self.clock()))
        try:
            messages = await self.fetcher.resolve(items)
        except GraphError as exc:
            raise Refused(f"media: {exc.reason} (answered 503: WhatsApp sends it again)", 503) from None
        except OSError as exc:
            raise Refused(f"media: the attachment store failed ({type(exc).__name__}); answered 503", 503) from None
        return WebhookResult(inbound=messages, receipts=receipts)

    async def send(self, message: Outbound) -> str:
        self._check_window(message)
        if not (message.external_id.isascii() and message.external_id.isdigit()
                and len(message.external_id) <= _WA_ID_DIGITS):
            raise SendFailed(f"recipient {message.external_id[:40]!r} is not a WhatsApp id (digits only)", retry=False)
        body = await self._media_body(message) if message.kind in MEDIA_KINDS else outbound.text_body(message)
        return await self.graph.send_message({"messaging_product": "whatsapp", "recipient_type": "individual",
                                              "to": message.external_id, **body})

    def _check_window(self, message: Outbound) -> None:
        """Outside 24 h of the customer's last message only templates pass: don't even try. An
        unknown last message (0) is left to the API, which answers 131047 if the window is shut."""
        if message.last_inbound_ms and self.clock() * 1000 - message.last_inbound_ms >= WINDOW_MS:
            last = datetime.fromtimestamp(message.last_inbound_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            raise SendFailed(f"WhatsApp's window is closed: {WINDOW_CLOSED} (last message {last})", retry=False)

    async def _media_body(self, message: Outbound) -> dict:
        if self.media is None:
            raise SendFailed("this channel has no attachment store to send files from", retry=False)
        try:
            meta, data = await self.media.read(str(message.content.get("attachment_id", "")))
        except LookupError:
            raise SendFailed(f"attachment {message.content.get('attachment_id')!r} not found", retry=False) from None
        mime, name = str(meta.get("mime", "")), str(meta.get("name") or "file")
        wa_type = outbound.media_type(message.kind, mime, len(data))
        media_id = await self.graph.upload(data, mime, name)
        return {"type": wa_type, wa_type: {"id": media_id, **({"filename": name} if wa_type == "document" else {})}}
