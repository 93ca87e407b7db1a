"""Checking a WeCom callback before anything is read from it: the signed query (msg_signature,
timestamp, nonce), the timestamp's age, the XML envelope (parsed with defusedxml: no DTD, no
entities, no external references), the signature over <Encrypt>, the decryption and the corp id
inside it, then the decrypted event. Every problem is a `Refused` naming it."""
from __future__ import annotations

import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml
from defusedxml.ElementTree import fromstring

from ..base import Refused, WebhookRequest
from ..wxcrypt import CryptoError, decrypt, signature_matches
from .config import Config

_SIGNATURE = re.compile(r"^[0-9a-fA-F]{40}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_NONCE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_OPEN_KFID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_MSG_TOKEN = 128     # sync_msg's documented limit for the callback's Token


@dataclass(frozen=True)
class Signed:
    signature: str
    timestamp: str
    nonce: str


@dataclass(frozen=True)
class KfEvent:
    """The decrypted callback: `event` is kf_msg_or_event for "new messages on this account"."""
    event: str
    token: str = ""
    open_kfid: str = ""


def signed_query(request: WebhookRequest, config: Config, now: float) -> Signed:
    signed = Signed(*(_param(request.query, name, pattern) for name, pattern in
                      (("msg_signature", _SIGNATURE), ("timestamp", _TIMESTAMP), ("nonce", _NONCE))))
    skew = int(signed.timestamp) - now
    if abs(skew) > config.max_clock_skew_s:
        raise Refused(f"stale timestamp: {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} our clock "
                      f"(at most {config.max_clock_skew_s} s)", 403)
    return signed


def echo(request: WebhookRequest, config: Config, signed: Signed) -> bytes:
    """The URL-verification handshake: the decrypted echostr, answered as it is."""
    echostr = request.query.get("echostr")
    if not isinstance(echostr, str) or not echostr:
        raise Refused("echostr: missing from the verification request")
    # base64 has no spaces: one here is a "+" that form-style query decoding turned into a space
    return _open(config, signed, echostr.replace(" ", "+"))


def event(request: WebhookRequest, config: Config, signed: Signed) -> KfEvent:
    body = request.body
    if not body.strip():
        raise Refused("body: empty; WeCom posts an <xml> with <Encrypt>")
    if len(body) > config.max_body_bytes:
        raise Refused(f"body: {len(body)} bytes, more than {config.max_body_bytes}", 413)
    outer = _xml(body, "body")
    to_user = _field(outer, "ToUserName", "body", required=False)
    if to_user is not None and to_user != config.corp_id:
        raise Refused(f"body: ToUserName {to_user[:64]!r} is not this channel's corp id", 403)
    inner = _xml(_open(config, signed, _field(outer, "Encrypt", "body")), "decrypted message")
    return _kf_event(inner, config)


def _open(config: Config, signed: Signed, ciphertext: str) -> bytes:
    # _SIGNATURE lets hex digits through in either case; the signature is compared in lowercase
    if not signature_matches(signed.signature.lower(), config.token, signed.timestamp, signed.nonce, ciphertext):
        raise Refused("msg_signature: does not match (forged, tampered with, or another Token)", 403)
    try:
        message, receive_id = decrypt(config.key(), ciphertext)
    except CryptoError as exc:
        raise Refused(f"decryption: {exc}", 403) from None
    if receive_id != config.corp_id:
        raise Refused(f"decryption: receiveid {receive_id[:64]!r} is not this channel's corp id", 403)
    return message


def _kf_event(inner: Element, config: Config) -> KfEvent:
    where = "decrypted message"
    if _field(inner, "ToUserName", where) != config.corp_id:
        raise Refused(f"{where}: ToUserName is not this channel's corp id", 403)
    if not _TIMESTAMP.match(_field(inner, "CreateTime", where)):
        raise Refused(f"{where}: CreateTime is not a unix time")
    if _field(inner, "MsgType", where) != "event":
        return KfEvent(event="")
    name = _field(inner, "Event", where)
    if name != "kf_msg_or_event":
        return KfEvent(event=name)
    token, open_kfid = _field(inner, "Token", where), _field(inner, "OpenKfId", where)
    if len(token.encode()) > MAX_MSG_TOKEN:
        raise Refused(f"{where}: Token is longer than {MAX_MSG_TOKEN} bytes")
    if not _OPEN_KFID.match(open_kfid):
        raise Refused(f"{where}: OpenKfId {open_kfid[:64]!r} is not an open_kfid")
    if not config.serves(open_kfid):
        raise Refused(f"{where}: OpenKfId {open_kfid!r} is not one of this channel's accounts", 403)
    return KfEvent(event=name, token=token, open_kfid=open_kfid)


def _param(query: dict, name: str, pattern: re.Pattern) -> str:
    value = query.get(name)
    if value is None or value == "":
        raise Refused(f"{name}: missing from the query", 403 if name == "msg_signature" else 400)
    if not isinstance(value, str) or not pattern.match(value):
        raise Refused(f"{name}: {str(value)[:64]!r} is not of the form WeCom sends")
    return value


def _xml(raw: bytes, where: str) -> Element:
    try:
        root = fromstring(raw, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden:
        raise Refused(f"{where}: has a DTD (entity declarations are never expanded)") from None
    except (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden, defusedxml.NotSupportedError):
        raise Refused(f"{where}: declares entities or external references (never expanded)") from None
    except (ParseError, ValueError):
        raise Refused(f"{where}: not well-formed XML") from None
    if root.tag != "xml":
        raise Refused(f"{where}: the root element is <{str(root.tag)[:32]}>, not <xml>")
    return root


def _field(root: Element, name: str, where: str, required: bool = True) -> str | None:
    found = root.findall(name)
    if len(found) > 1:
        raise Refused(f"{where}: <{name}> appears {len(found)} times")
    if not found:
        if required:
            raise Refused(f"{where}: <{name}> is missing")
        return None
    if len(found[0]):
        raise Refused(f"{where}: <{name}> holds elements, not text")
    text = (found[0].text or "").strip()
    if required and not text:
        raise Refused(f"{where}: <{name}> is empty")
    return text
