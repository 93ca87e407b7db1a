"""A checked customer message → `Inbound`s. Media is downloaded through WeChat's media API and
stored in the merchant's attachment store; media that can't be downloaded or stored becomes a
text note, so an agent still sees that the customer sent something. Locations and links arrive
as text; a voice message brings WeChat's speech recognition along when the account has it on."""
from __future__ import annotations

import asyncio

from connectors.base import Inbound, Media, SendFailed, text_parts
from storage.attachments import AttachmentRefused

from .api import WechatApi

# WeChat gives up on a callback after 5 s (and retries it, then tells the customer the account
# can't answer): the file must be in by then, with time left for the gateway to commit.
DOWNLOAD_BUDGET_S = 3.5
KIND = {"image": "image", "voice": "audio", "video": "video", "shortvideo": "video"}
LABEL = {"image": "图片 image", "voice": "语音 voice", "video": "视频 video", "shortvideo": "小视频 short video"}
EXT = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "audio/amr": ".amr",
       "audio/mpeg": ".mp3", "video/mp4": ".mp4"}
# WeChat's media API names its files loosely (application/octet-stream, text/plain for videos):
# the leading bytes decide then.
SNIFF = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG", "image/png"), (b"GIF8", "image/gif"),
         (b"#!AMR", "audio/amr"), (b"ID3", "audio/mpeg"))


def mime_of(declared: str, data: bytes) -> str:
    if declared in EXT:
        return declared
    for magic, mime in SNIFF:
        if data.startswith(magic):
            return mime
    return "video/mp4" if data[4:8] == b"ftyp" else declared or "application/octet-stream"


async def inbound(msg: dict[str, str], api: WechatApi, media: Media | None) -> list[Inbound]:
    """The message; a stored voice message is followed by WeChat's transcript of it, when it sent one."""
    kind, content = await _content(msg, api, media)
    found = _messages(msg, msg["MsgId"], kind, content)
    if kind == "audio" and msg.get("Recognition"):
        found += _messages(msg, msg["MsgId"] + ":recognition", "text",
                           {"text": f"[语音识别 voice transcript] {msg['Recognition']}"})
    return found


def _messages(msg: dict[str, str], message_id: str, kind: str, content: dict) -> list[Inbound]:
    """A text as protocol texts: without control characters, in parts of at most 4,000."""
    if kind != "text":
        return [_message(msg, message_id, kind, content)]
    return [_message(msg, message_id if n == 0 else f"{message_id}#{n + 1}", "text", {"text": part})
            for n, part in enumerate(text_parts(content["text"]))]


def _message(msg: dict[str, str], message_id: str, kind: str, content: dict) -> Inbound:
    return Inbound(external_id=msg["FromUserName"], message_id=message_id, kind=kind, content=content,
                   at_ms=int(msg["CreateTime"]) * 1000)


async def _content(msg: dict[str, str], api: WechatApi, media: Media | None) -> tuple[str, dict]:
    kind = msg["MsgType"]
    if kind == "text":
        return "text", {"text": msg["Content"]}
    if kind in KIND:
        return await _media(msg, api, media)
    if kind == "location":
        parts = ["[位置 location]", msg.get("Label"), f"({msg['Location_X']}, {msg['Location_Y']})"]
        return "text", {"text": " ".join(x for x in parts if x)}
    if kind == "link":
        lines = [msg.get("Title"), msg.get("Description"), msg["Url"]]
        return "text", {"text": "[链接 link] " + "\n".join(x for x in lines if x)}
    return "text", {"text": f"[不支持的消息类型 unsupported message type: {kind}]"}


async def _media(msg: dict[str, str], api: WechatApi, media: Media | None) -> tuple[str, dict]:
    kind = msg["MsgType"]
    if media is None:
        return _note(msg, "no attachment store")
    try:
        async with asyncio.timeout(DOWNLOAD_BUDGET_S):
            declared, data = await api.download(msg["MediaId"])
        mime = mime_of(declared, data)
        stored = await media.store(f"wechat-{msg['MsgId']}{EXT.get(mime, '')}", mime, data)
    except TimeoutError:
        return _note(msg, f"下载超时 not downloaded within {DOWNLOAD_BUDGET_S} s")
    except SendFailed as exc:
        return _note(msg, f"下载失败 not downloaded: {exc.reason}")
    except AttachmentRefused as exc:
        return _note(msg, f"未保存 not stored: {exc}")
    return KIND[kind], stored


def _note(msg: dict[str, str], why: str) -> tuple[str, dict]:
    text = f"[{LABEL[msg['MsgType']]} — {why}]"
    if msg.get("Recognition"):         # WeChat's speech recognition of a voice message, when enabled
        text += f"\n{msg['Recognition']}"
    return "text", {"text": text}
