"""peakdesk's message kinds as kf/send_msg bodies. Text longer than WeCom's 2048 bytes is cut
into parts (at line ends where it can); rich text, emoji, product and order cards are sent as
their text. Attachments are uploaded first (media/upload): JPEG/PNG images as images, MP4 video as
video, anything else — audio included, since WeCom's voice messages take AMR only — as a file."""
from __future__ import annotations

import hashlib
import html
import re

from ..base import Media, Outbound, SendFailed
from .api import ApiError, WeComApi

MAX_TEXT_BYTES = 2048                      # send_msg: text.content "最长不超过2048个字节"
UPLOAD_LIMITS = {"image": 10 << 20, "video": 10 << 20, "file": 20 << 20}
MIN_UPLOAD = 5                             # WeCom refuses files under 5 bytes
_TAG = re.compile(r"<[^>]*>")
_BREAK = re.compile(r"<\s*(br|/p|/li|/blockquote|/pre)\b[^>]*>", re.I)


def msgid(key: str, part: int = 0) -> str:
    """Our idempotency key as a send_msg msgid: at most 32 of [0-9a-zA-Z_-], the same on every
    retry, so WeCom refuses a second copy of a message it already took."""
    seed = key if part == 0 else f"{key}#{part}"
    return "pd" + hashlib.sha256(seed.encode()).hexdigest()[:30]


async def bodies(message: Outbound, api: WeComApi, media: Media | None) -> list[dict]:
    """The send_msg bodies (without touser/open_kfid/msgid) that carry `message`, in order."""
    if message.kind in ("image", "audio", "video", "file"):
        return [await _attachment(message, api, media)]
    return [{"msgtype": "text", "text": {"content": part}} for part in split(as_text(message))]


def as_text(message: Outbound) -> str:
    c = message.content if isinstance(message.content, dict) else {}
    if message.kind == "text":
        text = c.get("text")
    elif message.kind == "rich":
        text = html.unescape(_TAG.sub("", _BREAK.sub("\n", str(c.get("html", "")))))
    elif message.kind == "emoji":
        text = c.get("emoji")
    elif message.kind == "product":
        text = "\n".join(str(v) for v in (c.get("title"), _price(c), c.get("url")) if v)
    elif message.kind == "order":
        items = "、".join(f"{i.get('title', '')}×{i.get('qty', 1)}" for i in c.get("items") or [] if isinstance(i, dict))
        head = f"订单 Order {c.get('order_id', '')} · {c.get('status', '')}"
        text = "\n".join(v for v in (head, items, _price(c, "total")) if v)
    else:
        raise SendFailed(f"WeCom customer service cannot carry a {message.kind!r} message", retry=False)
    if not isinstance(text, str) or not text.strip():
        raise SendFailed(f"the {message.kind} message has no text to send", retry=False)
    return text


def _price(c: dict, field: str = "price") -> str:
    return f"{c.get(field)} {c.get('currency', '')}".strip() if c.get(field) else ""


def split(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """Parts of at most `limit` UTF-8 bytes, cut after a line end when one is in the last quarter."""
    parts = []
    while len(text.encode()) > limit:
        cut = _fit(text, limit)
        line_end = text.rfind("\n", 0, cut)
        if line_end >= cut * 3 // 4:
            cut = line_end + 1
        parts.append(text[:cut])
        text = text[cut:]
    return parts + [text] if text else parts


def _fit(text: str, limit: int) -> int:
    """How many characters of `text` fit in `limit` UTF-8 bytes."""
    return len(text.encode()[:limit].decode("utf-8", errors="ignore"))


async def _attachment(message: Outbound, api: WeComApi, media: Media | None) -> dict:
    attachment_id = message.content.get("attachment_id") if isinstance(message.content, dict) else None
    if media is None or not isinstance(attachment_id, str):
        raise SendFailed(f"the {message.kind} message has no attachment to send", retry=False)
    try:
        meta, data = await media.read(attachment_id)
    except LookupError:
        raise SendFailed(f"attachment {attachment_id} is not in the merchant's store", retry=False) from None
    kind = _wecom_type(message.kind, str(meta.get("mime", "")), len(data))
    if not MIN_UPLOAD <= len(data) <= UPLOAD_LIMITS[kind]:
        raise SendFailed(f"WeCom takes files of {MIN_UPLOAD} bytes to {UPLOAD_LIMITS[kind] >> 20} MB; "
                         f"{meta.get('name', attachment_id)} is {len(data)} bytes", retry=False)
    try:
        doc = await api.call("/cgi-bin/media/upload", params={"type": kind},
                             files={"media": (str(meta.get("name") or kind), data, str(meta.get("mime")))})
    except ApiError as exc:
        raise SendFailed(f"uploading {meta.get('name', attachment_id)}: {exc.reason}", retry=exc.retry) from None
    media_id = doc.get("media_id")
    if not isinstance(media_id, str) or not media_id:
        raise SendFailed("WeCom's upload answer has no media_id", retry=True)
    return {"msgtype": kind, kind: {"media_id": media_id}}


def _wecom_type(kind: str, mime: str, size: int) -> str:
    if kind == "image" and mime in ("image/jpeg", "image/png") and size <= UPLOAD_LIMITS["image"]:
        return "image"
    if kind == "video" and mime == "video/mp4" and size <= UPLOAD_LIMITS["video"]:
        return "video"
    return "file"
