"""WhatsApp's webhook, as Meta's Cloud API documentation describes it: the GET verification
handshake (hub.mode / hub.verify_token / hub.challenge), and POST notifications signed with
X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256(app secret, the raw body).

`read` refuses anything oversized, unsigned, forged, malformed, of another number or account,
or outside WhatsApp's 7-day retry horizon; `convert` turns what is left into Inbound messages
(media still `Pending` a download) and Receipts. Nothing here does I/O.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

import orjson
from pydantic import ValidationError

from connectors.base import Inbound, Receipt, Refused, WebhookRequest, WebhookResult, text_parts
from .config import WhatsAppConfig
from .models import MEDIA_TYPES, MediaRef, Message, Notification, Status, Value

MAX_BODY = 3 * 1024 * 1024          # Meta batches up to 1,000 updates; real ones are a few KiB
MAX_AGE_S = 8 * 86400               # WhatsApp retries an unanswered notification for up to 7 days
MAX_AHEAD_S = 3600                  # clock skew allowed; later than that is no message from WhatsApp
KIND = {"image": "image", "sticker": "image", "audio": "audio", "video": "video", "document": "file"}
RECEIPTS = ("sent", "delivered", "read", "failed")
IGNORED = ("reaction", "request_welcome")   # see docs/connectors/whatsapp.md: nothing to answer
_CHALLENGE = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")   # Meta's is a number; never reflect markup
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_CHOICE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


@dataclass(frozen=True)
class Pending:
    """A media message whose file is still to download; `fields` are its Inbound's others."""
    message_id: str
    kind: str
    ref: MediaRef
    fields: dict = field(default_factory=dict)


def answer_challenge(config: WhatsAppConfig, query: dict[str, str]) -> WebhookResult:
    if query.get("hub.mode") != "subscribe":
        raise Refused("hub.mode: must be 'subscribe' (WhatsApp's verification request)")
    if not hmac.compare_digest(query.get("hub.verify_token", "").encode(), config.verify_token.encode()):
        raise Refused("hub.verify_token: not this channel's verify token", 403)
    challenge = query.get("hub.challenge", "")
    if not _CHALLENGE.match(challenge):
        raise Refused("hub.challenge: missing, or not 1-128 letters and digits")
    return WebhookResult(body=challenge.encode())


def read(config: WhatsAppConfig, request: WebhookRequest, now: float) -> list[Value]:
    """The "messages" changes of a genuine notification for this channel."""
    if len(request.body) > MAX_BODY:
        raise Refused(f"body: {len(request.body)} bytes, over the {MAX_BODY // (1024 * 1024)} MiB limit", 413)
    check_signature(config.app_secret, request.headers.get("x-hub-signature-256", ""), request.body)
    try:
        raw = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise Refused(f"body: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise Refused("body: not a JSON object")
    try:
        note = Notification.model_validate(raw)
    except ValidationError as exc:
        raise Refused(_first_error(exc)) from None
    values = []
    for i, entry in enumerate(note.entry):
        if config.business_account_id and entry.id != config.business_account_id:
            raise Refused(f"entry.{i}.id: business account {entry.id} is not this channel's", 403)
        for j, change in enumerate(entry.changes):
            if change.field == "messages":
                values.append(_value(config, change.value, f"entry.{i}.changes.{j}.value", now))
    return values


def check_signature(app_secret: str, header: str, body: bytes) -> None:
    if not header:
        raise Refused("X-Hub-Signature-256: missing (WhatsApp signs every notification)", 403)
    given = _SIGNATURE.match(header)
    if not given:
        raise Refused("X-Hub-Signature-256: not 'sha256=' and 64 hex digits", 403)
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.group(1).lower()):
        raise Refused("X-Hub-Signature-256: does not match the body (forged, altered, or another app's secret)", 403)


def convert(values: list[Value]) -> tuple[list[Inbound | Pending], list[Receipt]]:
    items: list[Inbound | Pending] = []
    receipts = []
    for value in values:
        names = {c.wa_id: c.profile.name for c in value.contacts}
        for message in value.messages:
            items.extend(_items(message, names.get(message.sender, "")))
        receipts.extend(r for r in map(_receipt, value.statuses) if r is not None)
    return items, receipts


def _value(config: WhatsAppConfig, raw: dict, where: str, now: float) -> Value:
    try:
        value = Value.model_validate(raw)
    except ValidationError as exc:
        raise Refused(_first_error(exc, where)) from None
    if value.metadata.phone_number_id != config.phone_number_id:
        raise Refused(f"{where}.metadata.phone_number_id: {value.metadata.phone_number_id} is not this "
                      f"channel's number", 403)
    for name, rows in (("messages", value.messages), ("statuses", value.statuses)):
        for k, row in enumerate(rows):
            age = now - int(row.timestamp)
            if age > MAX_AGE_S:
                raise Refused(f"{where}.{name}.{k}.timestamp: {age / 86400:.0f} days old, past WhatsApp's "
                              "retry window: a replay")
            if age < -MAX_AHEAD_S:
                raise Refused(f"{where}.{name}.{k}.timestamp: {-age / 3600:.0f} hours in the future")
    return value


def _first_error(exc: ValidationError, where: str = "") -> str:
    error = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in (where, *error["loc"]) if part != "")
    return f"{loc or 'body'}: {error['msg']}"


def _items(message: Message, name: str) -> list[Inbound | Pending]:
    fields = {"external_id": message.sender, "name": name, "at_ms": int(message.timestamp) * 1000}
    if message.type in MEDIA_TYPES:
        ref: MediaRef = getattr(message, message.type)
        caption = _texts(f"{message.id}#caption", {"text": ref.caption}, fields) if ref.caption else []
        return [Pending(message.id, KIND[message.type], ref, fields), *caption]
    if message.type in IGNORED:
        return []
    return _texts(message.id, _content(message), fields)


def _texts(message_id: str, content: dict, fields: dict) -> list[Inbound]:
    """One text Inbound, or several when it is longer than a peakdesk text may be."""
    parts = text_parts(content["text"])     # and without control characters (docs/protocol.md)
    return [Inbound(message_id=message_id if n == 0 else f"{message_id}#{n + 1}", kind="text",
                    content={**content, "text": part} if n == 0 else {"text": part}, **fields)
            for n, part in enumerate(parts)]


def _content(message: Message) -> dict:
    kind = message.type
    if kind == "text":
        return {"text": message.text.body}
    if kind == "interactive" and (reply := message.interactive.button_reply or message.interactive.list_reply):
        # a tap on the choices `send` offered: the full question rides in a list row's description
        choice = {"choice": reply.id} if _CHOICE.match(reply.id) else {}    # an id of ours; protocol: 1-64, no control
        return {"text": reply.description or reply.title, **choice}
    if kind == "button":
        return {"text": message.button.text}
    if kind == "location":
        return {"text": _location(message)}
    if kind == "contacts":
        return {"text": _contacts(message.contacts)}
    if kind == "system" and message.system and message.system.body:
        return {"text": f"[WhatsApp] {message.system.body}"}
    return {"text": f"[不支持的 WhatsApp 消息 unsupported WhatsApp message: {kind}]"}


def _location(message: Message) -> str:
    place = message.location
    where = " ".join(x for x in (place.name, place.address) if x)
    return (f"📍 {where}\n" if where else "📍 ") + \
        f"{place.latitude:.6f},{place.longitude:.6f} https://maps.google.com/?q={place.latitude},{place.longitude}"


def _contacts(cards: list[dict]) -> str:
    lines = []
    for card in cards:
        name = (card.get("name") or {}).get("formatted_name", "") if isinstance(card.get("name"), dict) else ""
        phones = card.get("phones") if isinstance(card.get("phones"), list) else []
        phones = [str(p.get("phone", "")) for p in phones if isinstance(p, dict)]
        lines.append(f"👤 {name} {' '.join(phones)}".rstrip())
    return "\n".join(lines) or "👤"


def _receipt(status: Status) -> Receipt | None:
    if status.status not in RECEIPTS:
        return None             # e.g. "deleted", "warning": nothing peakdesk tracks
    error = "; ".join(f"{e.code} {e.title or e.message}".strip() + _details(e.error_data) for e in status.errors)
    return Receipt(message_id=status.id, status=status.status, error=error[:500])


def _details(data: dict) -> str:
    details = data.get("details")
    return f": {details}" if isinstance(details, str) and details else ""
