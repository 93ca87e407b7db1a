"""An `Outbound` → the JSON of WeChat's customer-service message API (客服消息): text kinds as a
text message, images, audio and video uploaded as temporary media first. WeChat has no file
message for official accounts: a file is refused for good, with the reason."""
from __future__ import annotations

from connectors.base import Media, Outbound, SendFailed

from .api import WechatApi
from .inbound import EXT
from .messages import OPENID
from .render import TEXT_KINDS, as_text

MB = 1024 * 1024
# kind → (WeChat's media type, the files it takes, its size limit) — from the temporary media rules
UPLOADS = {
    "image": ("image", {"image/jpeg", "image/png", "image/gif"}, 10 * MB),
    "audio": ("voice", {"audio/mpeg", "audio/amr"}, 2 * MB),
    "video": ("video", {"video/mp4"}, 10 * MB),
}


async def payload(message: Outbound, api: WechatApi, media: Media | None) -> dict:
    if not OPENID.match(message.external_id or ""):
        raise SendFailed("the recipient is not a WeChat openid", retry=False)
    if message.kind in TEXT_KINDS:
        text = as_text(message.kind, message.content).strip()
        if not text:
            raise SendFailed(f"the {message.kind} message has no text to send", retry=False)
        return {"touser": message.external_id, "msgtype": "text", "text": {"content": text}}
    if message.kind not in UPLOADS:
        what = "files (send a link instead)" if message.kind == "file" else f"{message.kind!r} messages"
        raise SendFailed(f"WeChat official accounts cannot send {what}", retry=False)
    kind, meta, media_id = await _upload(message, api, media)
    body = {"media_id": media_id}
    if kind == "video":               # WeChat shows a title under a video; its thumbnail is optional
        body.update(title=meta["name"], description="")
    return {"touser": message.external_id, "msgtype": kind, kind: body}


async def _upload(message: Outbound, api: WechatApi, media: Media | None) -> tuple[str, dict, str]:
    if media is None:
        raise SendFailed("the channel has no attachment store to read the file from", retry=False)
    try:
        meta, data = await media.read(str(message.content.get("attachment_id", "")))
    except LookupError:
        raise SendFailed("the attachment is not in the merchant's store", retry=False) from None
    kind, mimes, limit = UPLOADS[message.kind]
    if meta["mime"] not in mimes:
        raise SendFailed(f"WeChat {kind} messages take {', '.join(sorted(mimes))}, not {meta['mime']}", retry=False)
    if len(data) > limit:
        raise SendFailed(f"WeChat {kind} messages take at most {limit // MB} MB, the file has {len(data)} bytes",
                         retry=False)
    # WeChat judges an upload by its file name's extension: an ASCII name with the right one
    filename = f"{message.kind}{EXT[meta['mime']]}"
    return kind, meta, await api.upload(kind, filename, meta["mime"], data)
