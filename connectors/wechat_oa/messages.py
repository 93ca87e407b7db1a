"""WeChat's callback XML: parsed without ever expanding an entity or reading a DTD
(defusedxml, DTDs forbidden outright: WeChat never sends one), checked field by field, and the
passive replies (plain or encrypted) built. A message is a flat dict of its `<xml>` children."""
from __future__ import annotations

import re
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from connectors.base import Refused

OPENID = re.compile(r"^[A-Za-z0-9_-]{6,64}$")
_DIGITS = re.compile(r"^[0-9]{1,20}$")
_TYPE = re.compile(r"^[a-z_]{1,32}$")
_NUMBER = re.compile(r"^-?[0-9]{1,3}(\.[0-9]{1,12})?$")
# What each message type must carry besides the header (ToUserName, FromUserName, CreateTime, MsgType).
REQUIRED = {
    "text": ("Content", "MsgId"), "image": ("MediaId", "MsgId"), "voice": ("MediaId", "MsgId"),
    "video": ("MediaId", "MsgId"), "shortvideo": ("MediaId", "MsgId"),
    "location": ("Location_X", "Location_Y", "MsgId"), "link": ("Url", "MsgId"), "event": ("Event",),
}
_RAW = {"Content", "Recognition", "Description", "Title", "Label"}   # customer text: kept as written


def parse(body: bytes, what: str = "body") -> dict[str, str]:
    """The children of the `<xml>` root as {tag: text}; anything else is refused."""
    try:
        body.decode("utf-8")
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except UnicodeDecodeError:
        raise Refused(f"{what}: not UTF-8", 400) from None
    except defusedxml.DefusedXmlException as exc:
        raise Refused(f"{what}: DTDs and entities are not accepted ({type(exc).__name__})", 400) from None
    except ParseError as exc:
        raise Refused(f"{what}: not well-formed XML ({exc})", 400) from None
    return _fields(root, what)


def _fields(root: Element, what: str) -> dict[str, str]:
    if root.tag != "xml":
        raise Refused(f"{what}: the root element is <{root.tag}>, not <xml>", 400)
    fields: dict[str, str] = {}
    for child in root:
        if child.tag in fields:
            raise Refused(f"{what}: <{child.tag}> appears twice", 400)
        text = child.text or ""
        fields[child.tag] = text if child.tag in _RAW else text.strip()
    return fields


def check(msg: dict[str, str], account: str | None) -> dict[str, str]:
    """A customer message or event, its fields checked; `account` the gh_ id it must be sent to."""
    for name in ("ToUserName", "FromUserName", "CreateTime", "MsgType"):
        if not msg.get(name):
            raise Refused(f"{name}: missing", 400)
    if account and msg["ToUserName"] != account:
        raise Refused(f"ToUserName: {msg['ToUserName'][:64]!r} is not this account ({account})", 400)
    if not OPENID.match(msg["FromUserName"]):
        raise Refused("FromUserName: not an openid", 400)
    if not _DIGITS.match(msg["CreateTime"]):
        raise Refused("CreateTime: not a number of seconds", 400)
    if not _TYPE.match(msg["MsgType"]):
        raise Refused("MsgType: not a message type", 400)
    for name in REQUIRED.get(msg["MsgType"], ("MsgId",)):
        if not msg.get(name):
            raise Refused(f"{name}: missing from a {msg['MsgType']} message", 400)
    if "MsgId" in msg and msg["MsgType"] != "event" and not _DIGITS.match(msg["MsgId"]):
        raise Refused("MsgId: not a number", 400)
    for name in ("Location_X", "Location_Y"):
        if msg["MsgType"] == "location" and not _NUMBER.match(msg[name]):
            raise Refused(f"{name}: not a coordinate", 400)
    return msg


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def text_reply(to: str, account: str, now: int, text: str) -> str:
    """A passive text reply (被动回复) to `to` from the account."""
    return (f"<xml><ToUserName>{_cdata(to)}</ToUserName><FromUserName>{_cdata(account)}</FromUserName>"
            f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content>{_cdata(text)}</Content></xml>")


def encrypted_reply(encrypted: str, msg_signature: str, timestamp: str, nonce: str) -> str:
    return (f"<xml><Encrypt>{_cdata(encrypted)}</Encrypt><MsgSignature>{_cdata(msg_signature)}</MsgSignature>"
            f"<TimeStamp>{timestamp}</TimeStamp><Nonce>{_cdata(nonce)}</Nonce></xml>")
