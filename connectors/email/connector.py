"""Email as a channel: customers' mail is pulled from an IMAP mailbox (`poll`), answers go out by
SMTP (`send`); a thread of mail is one conversation.

Polling. The cursor is "UIDVALIDITY:last UID". The first poll ("" cursor) starts from the newest
mail and delivers nothing that was already there: a mailbox with years of mail is not poured into
the queue. When the mailbox's UIDVALIDITY changes (it was rebuilt or moved: its UIDs mean other
mails now) the channel likewise starts over from the newest and logs it; mail that arrived
between the last poll and the rebuild is not delivered (the merchant is told in the log and
docs/connectors/email.md). A mail that is malformed, hostile or automatic is skipped with a log
line naming why, and the cursor moves past it; nothing of it is stored.

Threads. `thread` is the root Message-ID (References' first id, else In-Reply-To, else the mail's
own); `reply_to` keeps the mail's Message-ID, References and Subject; `external_id` is the
sender's address, lower-cased. Each Inbound's `message_id` is the mail's Message-ID (the text) or
"<Message-ID>#n" (its n-th attachment): a mail polled twice is the same messages twice.

Bounces of our mail (delivery reports naming a Message-ID we made) become `Receipt`s with status
"failed": `poll` can only return Inbound, so they wait in `take_receipts()` for the gateway."""
from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Callable, ClassVar

import httpx

from connectors.base import Inbound, Media, Outbound, Receipt, Refused, SendFailed, State, WebhookRequest, \
    WebhookResult

from .config import ADDRESS, EmailConfig
from .ids import Own
from .imap import fetch_new
from .parse import Attachment, Bounce, Mail, parse_mail
from .smtp import build, deliver
from .text import html_to_text

log = logging.getLogger(__name__)
MAX_TEXT = 4000                       # a text message's limit (docs/protocol.md)
_CURSOR = re.compile(r"(\d{1,10}):(\d{1,10})")
_MEDIA_KINDS = ("image", "audio", "video", "file")


class EmailConnector:
    name: ClassVar[str] = "email"
    Config: ClassVar[type[EmailConfig]] = EmailConfig

    def __init__(self, config: EmailConfig, http: httpx.AsyncClient, media: Media | None = None,
                 state: State | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.config, self.media, self.state, self.clock = config, media, state, clock
        self.own = Own(config.from_address)
        self._polled_at = float("-inf")
        self._receipts: list[Receipt] = []

    async def webhook(self, request: WebhookRequest) -> WebhookResult:
        raise Refused("email has no webhook: the channel reads its mailbox over IMAP", 404)

    # -- in ----------------------------------------------------------------------------------------
    async def poll(self, cursor: str) -> tuple[list[Inbound], str]:
        """New mail since `cursor`; raises MailboxError when the mailbox can't be read (`retry`
        False: the login or the mailbox name is wrong). Opens the mailbox at most once per
        poll_interval_s however often it is called."""
        if self.clock() - self._polled_at < self.config.poll_interval_s:
            return [], cursor
        self._polled_at = self.clock()
        validity, after = self._cursor(cursor)
        fetched = await asyncio.to_thread(fetch_new, self.config, validity, after)
        if fetched.validity != validity:
            if validity is not None:
                log.warning("email %s: UIDVALIDITY of %r changed from %s to %s: starting over from the newest mail",
                            self.own.address, self.config.mailbox, validity, fetched.validity)
            return [], f"{fetched.validity}:{fetched.newest}"
        inbound: list[Inbound] = []
        for uid, raw, size in fetched.mails:
            inbound += await self._take(uid, raw, size)
            after = uid
        return inbound, f"{fetched.validity}:{after}"

    def take_receipts(self) -> list[Receipt]:
        """Delivery reports found by `poll` since the last call, each handed over once."""
        taken, self._receipts = self._receipts, []
        return taken

    def _cursor(self, cursor: str) -> tuple[int | None, int]:
        found = _CURSOR.fullmatch(cursor or "")
        if found is None:
            if cursor:
                log.warning("email %s: unreadable cursor %r: starting from the newest mail",
                            self.own.address, cursor[:40])
            return None, 0
        return int(found.group(1)), int(found.group(2))

    async def _take(self, uid: int, raw: bytes | None, size: int) -> list[Inbound]:
        if raw is None:
            why = f"size: {size} bytes, over the channel's limit of {self.config.max_message_bytes} (not downloaded)" \
                if size > self.config.max_message_bytes else "gone from the mailbox before it was fetched"
            return self._skip(uid, why)
        try:
            parsed = await asyncio.to_thread(parse_mail, raw, self.own, self.config.max_message_bytes)
        except Refused as exc:
            return self._skip(uid, exc.reason)
        if isinstance(parsed, Bounce):
            log.info("email %s: UID %s reports %s %s: %s", self.own.address, uid, parsed.message_id,
                     parsed.status, parsed.error)
            self._receipts.append(Receipt(parsed.message_id, parsed.status, parsed.error))
            return []
        return await self._inbound(parsed)

    def _skip(self, uid: int, reason: str) -> list[Inbound]:
        log.warning("email %s: skipped mail UID %s of %r: %s", self.own.address, uid, self.config.mailbox, reason)
        return []

    async def _inbound(self, mail: Mail) -> list[Inbound]:
        common = dict(external_id=mail.sender, name=mail.name, thread=mail.thread, at_ms=mail.at_ms,
                      reply_to={"message_id": mail.message_id, "references": list(mail.references),
                                "subject": mail.subject})
        notes, items = list(mail.dropped), []
        for n, attachment in enumerate(mail.attachments, 1):
            content = await self._store(attachment, notes)
            if content is not None:
                kind = attachment.mime.split("/")[0]
                items.append(Inbound(message_id=f"{mail.message_id}#{n}", kind=kind if kind in _MEDIA_KINDS else "file",
                                     content=content, **common))
        text = _compose(mail, notes)
        if text:
            items.insert(0, Inbound(message_id=mail.message_id, kind="text", content={"text": text}, **common))
        return items

    async def _store(self, attachment: Attachment, notes: list[str]) -> dict | None:
        if self.media is None:
            notes.append(f"{attachment.name} (this channel keeps no attachments)")
            return None
        try:
            return await self.media.store(attachment.name, attachment.mime, attachment.data)
        except ValueError as exc:            # the store's limits: type, size, name
            notes.append(f"{attachment.name} ({attachment.mime}): {exc}")
            return None

    # -- out ---------------------------------------------------------------------------------------
    async def send(self, message: Outbound) -> str:
        """The reply mailed; returns its Message-ID (the same for every retry of the message)."""
        if not ADDRESS.match(message.external_id or ""):
            raise SendFailed(f"recipient: {message.external_id[:100]!r} is not an email address", retry=False)
        body, files = await self._render(message)
        mail = build(self.config, self.own, message, body, files)
        await asyncio.to_thread(deliver, self.config, mail, message.external_id)
        return str(mail["Message-ID"])

    async def _render(self, message: Outbound) -> tuple[str, list[tuple[dict, bytes]]]:
        content = message.content or {}
        if message.kind in _MEDIA_KINDS:
            meta, data = await self._read(str(content.get("attachment_id") or ""))
            return str(content.get("name") or meta.get("name") or ""), [(meta, data)]
        body = _as_text(message.kind, content).strip()
        if not body:
            raise SendFailed(f"an empty {message.kind} message", retry=False)
        return body, []

    async def _read(self, attachment_id: str) -> tuple[dict, bytes]:
        if self.media is None:
            raise SendFailed("this channel has no attachment store to read the file from", retry=False)
        try:
            return await self.media.read(attachment_id)
        except LookupError:
            raise SendFailed(f"attachment {attachment_id[:40]!r} not found", retry=False) from None


def _compose(mail: Mail, notes: list[str]) -> str:
    parts = []
    if mail.subject and not mail.references:          # a new thread: its subject says what it is about
        parts.append(f"主题 Subject: {mail.subject}")
    if mail.text:
        parts.append(mail.text)
    parts += [f"[附件未收下 Attachment not kept: {note}]" for note in notes]
    text = "\n\n".join(parts)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _as_text(kind: str, content: dict) -> str:
    if kind == "text":
        return str(content.get("text") or "")
    if kind == "rich":
        return html_to_text(str(content.get("html") or ""))
    if kind == "product":
        price = f"{content.get('price', '')} {content.get('currency', '')}".strip()
        return "\n".join(str(v) for v in (content.get("title"), price, content.get("url")) if v)
    if kind == "order":
        items = [f"- {i.get('title', '')} × {i.get('qty', 1)}"
                 for i in content.get("items") or [] if isinstance(i, dict)]
        head = f"订单 Order {content.get('order_id', '')}: {content.get('status', '')}"
        total = f"{content.get('total', '')} {content.get('currency', '')}".strip()
        return "\n".join([head, *items] + ([total] if total else []))
    raise SendFailed(f"a {kind!r} message cannot be sent by email", retry=False)
