"""sync_msg's messages as peakdesk sees them. Customers' messages (origin 3) become `Inbound`s —
text as text, images, voice, video and files downloaded and stored in the merchant's attachment
store, everything else (location, link, card, mini program, Channels products and orders, chat
records…) as readable text; a msg_send_fail event (origin 4) becomes a failed `Receipt`. Servicers'
own messages (origin 5) and the other system events are not the customer's and are skipped."""
from __future__ import annotations

import logging
import mimetypes
import re

from ..base import Inbound, Media, Receipt, protocol_text
from .api import ApiError, WeComApi
from .errors import SEND_FAIL_TYPES

log = logging.getLogger(__name__)

FROM_CUSTOMER, SYSTEM_EVENT = 3, 4
MEDIA_KINDS = {"image": "image", "voice": "audio", "video": "video", "file": "file"}
LABELS = {"image": "图片 Image", "voice": "语音 Voice", "video": "视频 Video", "file": "文件 File"}
MAX_MEDIA = 20 * 1024 * 1024     # WeCom's largest inbound media (files); the attachment store's limit too
MAX_TEXT = 4000                  # docs/protocol.md: a text is 1-4,000 characters
_NAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")
_GENERIC_MIME = {"", "application/octet-stream", "binary/octet-stream", "application/x-download"}
_MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"),
          (b"#!AMR", "audio/amr"), (b"#!SILK", "audio/silk"), (b"\x02#!SILK", "audio/silk"),
          (b"%PDF-", "application/pdf"))


class Upstream(Exception):
    """WeCom failed in a way worth retrying (busy, unreachable): the callback is answered 503."""


def _str(doc: dict, key: str) -> str:
    value = doc.get(key)
    return value if isinstance(value, str) else ""


def _describe(doc: dict, *keys: str) -> str:
    return " ".join(str(doc[k]) for k in keys if isinstance(doc.get(k), (str, int, float)) and str(doc[k]))


# msgtype -> how its body reads as text
TEXT_FORMS = {
    "location": lambda b: f"[位置 Location] {_describe(b, 'name', 'address')} ({b.get('latitude')}, {b.get('longitude')})",
    "link": lambda b: f"[链接 Link] {_describe(b, 'title')}\n{_describe(b, 'desc')}\n{_describe(b, 'url')}".strip(),
    "business_card": lambda b: f"[名片 Contact card] {_describe(b, 'userid')}",
    "miniprogram": lambda b: f"[小程序 Mini program] {_describe(b, 'title', 'appid')}",
    "msgmenu": lambda b: f"[菜单 Menu] {_describe(b, 'head_content', 'tail_content')}",
    "channels_shop_product": lambda b: f"[视频号商品 Product] {_describe(b, 'title', 'sales_price', 'product_id')}",
    "channels_shop_order": lambda b:
        f"[视频号订单 Order] {_describe(b, 'order_id', 'product_titles', 'price_wording', 'state')}",
    "merged_msg": lambda b: f"[聊天记录 Chat history] {_describe(b, 'title')}",
    "channels": lambda b: f"[视频号 Channels] {_describe(b, 'nickname', 'title')}",
    "note": lambda b: "[笔记 Note]",
}


async def convert(msg: dict, api: WeComApi, media: Media | None) -> Inbound | Receipt | None:
    if not isinstance(msg, dict) or not _str(msg, "msgid") or not isinstance(msg.get("origin"), int):
        log.warning("wecom_kf: skipped a sync_msg entry without msgid/origin")
        return None
    if msg["origin"] == SYSTEM_EVENT and msg.get("msgtype") == "event":
        return _receipt(msg.get("event"))
    if msg["origin"] != FROM_CUSTOMER or not _str(msg, "external_userid") or not _str(msg, "open_kfid"):
        return None
    kind, content = await _content(msg, api, media)
    if kind == "text":      # no control characters in a protocol text (a customer's or WeCom's)
        content = {"text": protocol_text(content["text"])[:MAX_TEXT]}
    send_time = msg.get("send_time")
    return Inbound(external_id=msg["external_userid"], message_id=msg["msgid"], kind=kind, content=content,
                   thread=msg["open_kfid"], at_ms=send_time * 1000 if isinstance(send_time, int) else 0,
                   reply_to={"open_kfid": msg["open_kfid"]})


def _receipt(event) -> Receipt | None:
    if not isinstance(event, dict) or event.get("event_type") != "msg_send_fail" or not _str(event, "fail_msgid"):
        return None
    fail_type = event.get("fail_type")
    known = SEND_FAIL_TYPES.get(fail_type) if isinstance(fail_type, int) else None   # (a list is no dict key)
    return Receipt(message_id=event["fail_msgid"], status="failed", error=known or f"fail_type {str(fail_type)[:64]}")


async def _content(msg: dict, api: WeComApi, media: Media | None) -> tuple[str, dict]:
    msgtype = _str(msg, "msgtype")
    body = msg.get(msgtype) if isinstance(msg.get(msgtype), dict) else {}
    if msgtype == "text":
        return "text", {"text": (_str(body, "content") or "[空消息 empty message]")[:MAX_TEXT]}
    if msgtype in MEDIA_KINDS:
        return await _media(msg, msgtype, _str(body, "media_id"), api, media)
    form = TEXT_FORMS.get(msgtype)
    text = form(body) if form else f"[{msgtype or 'unknown'}] this message type is not shown here; see it in WeCom"
    return "text", {"text": text[:MAX_TEXT]}


async def _media(msg: dict, msgtype: str, media_id: str, api: WeComApi, media: Media | None) -> tuple[str, dict]:
    label = LABELS[msgtype]
    if not media_id or media is None:
        return "text", {"text": f"[{label}] not stored: {'no media_id' if not media_id else 'no attachment store'}"}
    try:
        download = await api.get_media(media_id, MAX_MEDIA)
    except ApiError as exc:
        if exc.retry:
            raise Upstream(f"media download: {exc.reason}") from None
        return "text", {"text": f"[{label}] could not be fetched from WeCom: {exc.reason}"}
    name = _name(download.filename, msgtype, msg["msgid"])
    mime = _mime(download, name)
    try:
        return MEDIA_KINDS[msgtype], await media.store(name, mime, download.data)
    except ValueError as exc:   # the attachment store refuses this type or size
        return "text", {"text": f"[{label}] {name} ({mime}, {len(download.data)} bytes) not stored: {exc}"}


def _name(filename: str, msgtype: str, msgid: str) -> str:
    name = _NAME_UNSAFE.sub("_", filename).strip()[-200:]
    return name or f"{msgtype}-{re.sub(r'[^A-Za-z0-9]', '', msgid)[-16:] or 'wecom'}"


def _mime(download, name: str) -> str:
    sniffed = next((mime for magic, mime in _MAGIC if download.data.startswith(magic)), "")
    if download.data[4:8] == b"ftyp":
        sniffed = "video/mp4"
    header = download.content_type.split(";")[0].strip().lower()
    if sniffed.startswith(("image/", "audio/", "video/")):
        return sniffed              # what the bytes are beats what a header says
    if header not in _GENERIC_MIME:
        return header
    return mimetypes.guess_type(name)[0] or sniffed or "application/octet-stream"
