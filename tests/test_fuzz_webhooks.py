"""Fuzzing the connectors' webhook parsers (issue 13): hypothesis-made bodies, headers and
queries — signed and encrypted correctly, so that the parser itself is reached — for the generic
`webhook` connector, WhatsApp, the WeChat Official Account and WeCom customer service. Whatever
arrives ends as a `WebhookResult` whose messages are protocol content, or as `Refused` with one
of the statuses the connector documents: never another exception (the gateway would answer 500
and the platform would retry it forever).

The platforms' own API answers a webhook leads to (WhatsApp's media lookups, WeChat's and WeCom's
tokens, media downloads and WeCom's sync_msg pages) are fuzzed too, through an httpx mock
transport: a connector must survive whatever its platform says.

Not repeated here: tests/test_connector_wechat_oa.py fuzzes the Official Account's raw body and
its Encrypt text (which fail before decryption); tests/test_wxcrypt.py the cryptography;
tests/test_connector_email.py mail parsing. Here the Official Account is fuzzed past decryption.

Bounded: hypothesis `max_examples` below (PEAKDESK_FUZZ=deep: five times as many).
"""
from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import os
import re
import time
from typing import Any, Callable
from xml.sax.saxutils import escape

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from connectors.base import Inbound, Receipt, Refused, WebhookRequest, WebhookResult
from connectors.support import MerchantMedia
from connectors.webhook import WebhookConnector
from connectors.wechat_oa import WechatOAConfig, WechatOAConnector
from connectors.wecom_kf import Config as WeComConfig, WeComKfConnector
from connectors.whatsapp import WhatsApp
from gateway.protocol import CONTENT
from storage.attachments import LocalAttachmentStore
from storage.webhooks import sign as peakdesk_sign
from tests import whatsapp_server as wa
from tests.fuzz_support import slots
from tests.wechat_oa_server import AES_KEY as WX_AES_KEY, APP_ID as WX_APP_ID, APP_SECRET as WX_APP_SECRET, \
    ORIGINAL_ID, TOKEN as WX_TOKEN, wx_encrypt, wx_signature, wx_xml
from tests.wecom_kf_server import AES_KEY as KF_AES_KEY, CORP_ID, SECRET as KF_SECRET, TOKEN as KF_TOKEN, \
    wecom_encrypt, wecom_sign

DEEP = os.environ.get("PEAKDESK_FUZZ") == "deep"
_FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))


def fuzz(examples: int) -> settings:
    return settings(_FUZZ, max_examples=examples * (5 if DEEP else 1))


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
JPEG = b"\xff\xd8\xff\xe0" + bytes(80)
PDF = b"%PDF-1.4\n%" + "发票".encode() + bytes(40)
MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(64)
OPENID = "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
KF = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"
USER = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw"


# -- values ---------------------------------------------------------------------------------------
HOSTILE = st.sampled_from([
    "", " ", "\x00", "a\x07b", "\u2028", "\ufeff", "🦄", "长" * 5000, "0" * 300, "-1", "1e400", "NaN", "null",
    "<script>alert(1)</script>", "]]>", "<![CDATA[", "&amp;", "&#0;", "javascript:alert(1)", "../../etc/passwd",
    "image/png", "application/x-msdownload", "https://", "http://127.0.0.1:9/x", "99999999999999999999999"])
NUMBERS = st.one_of(st.integers(-(2 ** 63), 2 ** 64), st.sampled_from([0, -1, 1, 10 ** 30]),
                    st.floats(allow_nan=False, allow_infinity=False))
TEXT = st.text(st.characters(codec="utf-8"), max_size=30)      # (invalid UTF-8 comes as raw bytes)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, HOSTILE)
JSON_VALUES = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) |
                           st.dictionaries(TEXT, kids, max_size=4), max_leaves=10)
# JSON nested deeper than the parser's recursion limit: json.loads raises RecursionError, no ValueError
BOMB = b'{"errcode": 0, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@st.composite
def mutated(draw, templates: list, names: list[str], edits: tuple[int, int] = (0, 3)):
    """A valid document with a few edits: a value replaced, a key removed, a key added."""
    doc = copy.deepcopy(draw(st.sampled_from(templates)))
    for _ in range(draw(st.integers(*edits))):
        places = slots(doc)
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        edit = draw(st.sampled_from(["replace", "replace", "remove", "add"]))
        if edit == "replace":
            container[key] = draw(JSON_VALUES)
        elif edit == "remove":
            del container[key]
        elif isinstance(container[key], dict):
            container[key][draw(st.sampled_from(names) | st.text(max_size=8))] = draw(JSON_VALUES)
    return doc


def as_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def mostly(likely, *rarely):
    """`likely` three times in four (one_of would take each strategy as often)."""
    return st.integers(0, 3).flatmap(lambda n: st.one_of(*rarely) if n == 3 else likely)


# -- platform API answers, through httpx.MockTransport --------------------------------------------
class Platform:
    """Answers for the connector's HTTP calls: `answers[route]` is a list, one per call, the last
    repeated; a route is picked by `route(request)`. What a webhook led to is in `calls`."""

    def __init__(self, route: Callable[[httpx.Request], str], answers: dict[str, list[httpx.Response]]):
        self.route, self.answers, self.calls = route, answers, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        name = self.route(request)
        self.calls.append(name)
        queue = self.answers.get(name) or [httpx.Response(404, json={"error": "no such route"})]
        return queue.pop(0) if len(queue) > 1 else queue[0]


def answer_of(status: int, body: Any, content_type: str = "application/json") -> httpx.Response:
    """`body`: bytes as they are, anything else as JSON."""
    raw = body if isinstance(body, bytes) else as_json(body)
    return httpx.Response(status, content=raw, headers={"content-type": content_type})


MEDIA_BYTES = st.sampled_from([PNG, JPEG, PDF, MP4, b"", b"{}", b"not a file", b"#!AMR\n" + bytes(30)]) | st.binary(max_size=64)
MIMES = st.sampled_from(["image/png", "image/jpeg", "application/pdf", "video/mp4", "audio/amr", "text/plain",
                         "application/octet-stream", "application/x-msdownload", "", "image/png; charset=x", "a" * 300])
STATUSES = st.sampled_from([200, 200, 200, 200, 400, 404, 429, 500, 503])


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """The real attachment store (its refusals are part of what a connector must take)."""
    return MerchantMedia(LocalAttachmentStore(tmp_path_factory.mktemp("fuzz-media")), "m1")


async def outcome(make: Callable[[httpx.AsyncClient], Any], request: WebhookRequest, platform: Platform | None,
                  statuses: set[int]) -> WebhookResult | Refused:
    """The connector's answer to `request`: a result of protocol content, or Refused with a
    documented status — anything else fails the test."""
    transport = httpx.MockTransport(platform or Platform(lambda r: "none", {}))
    async with httpx.AsyncClient(transport=transport) as http:
        connector = make(http)
        try:
            result = await connector.webhook(request)
        except Refused as refused:
            assert refused.status in statuses, (refused.status, refused.reason)
            assert isinstance(refused.reason, str) and refused.reason and "Traceback" not in refused.reason
            return refused
    check_result(result)
    return result


def check_result(result: WebhookResult) -> None:
    assert isinstance(result, WebhookResult) and 200 <= result.status < 600
    assert isinstance(result.body, bytes) and isinstance(result.content_type, str)
    for message in result.inbound:
        assert isinstance(message, Inbound), message
        assert isinstance(message.external_id, str) and message.external_id
        assert isinstance(message.message_id, str) and message.message_id
        assert message.kind in ("text", "image", "audio", "video", "file"), message.kind
        CONTENT[message.kind].model_validate(message.content)     # what a client would be sent
        assert isinstance(message.at_ms, int) and isinstance(message.reply_to, dict)
    for receipt in result.receipts:
        assert isinstance(receipt, Receipt) and receipt.status in ("sent", "delivered", "read", "failed"), receipt
        assert isinstance(receipt.message_id, str) and receipt.message_id and isinstance(receipt.error, str)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in result.state_updates.items())


# == the generic webhook connector ================================================================
HOOK_SECRET = "whsec-" + "k" * 40
HOOK_CONFIG = WebhookConnector.Config.model_validate({"secret": HOOK_SECRET, "send_url": "https://middleware.test/send"})
HOOK_STATUSES = {400, 401, 405, 413, 502}
HOOK_MESSAGES = [
    {"customer_id": "jd-1", "message_id": "m-1", "kind": "text", "content": {"text": "我的快递坏了"},
     "name": "张三", "thread": "t-1", "sent_at": 1_700_000_000_000, "reply_to": {"order": "o-1"}},
    {"customer_id": "jd-2", "message_id": "m-2", "kind": "image",
     "content": {"url": "https://cdn.test/a.png", "name": "a.png", "mime": "image/png"}},
    {"customer_id": "jd-3", "message_id": "m-3", "kind": "file",
     "content": {"url": "https://cdn.test/b.pdf", "name": "发票.pdf", "mime": "application/pdf"}},
]
HOOK_RECEIPTS = [{"message_id": "p-1", "status": "read"}, {"message_id": "p-2", "status": "failed", "error": "blocked"}]
HOOK_BODIES = mostly(
    st.builds(lambda m, r: {"messages": m, "receipts": r},
              st.lists(mutated(HOOK_MESSAGES, ["url", "name", "mime", "text", "kind", "content"]), max_size=3),
              st.lists(mutated(HOOK_RECEIPTS, ["status", "error"]), max_size=2)),
    mutated([{"messages": HOOK_MESSAGES, "receipts": HOOK_RECEIPTS}], ["messages", "receipts", "admin"]),
    JSON_VALUES.map(as_json), st.binary(max_size=200))


def hook_platform(status: int, data: bytes, failing: bool) -> Platform:
    def route(request):
        if failing:
            raise httpx.ConnectError("refused", request=request)
        return "cdn"
    return Platform(route, {"cdn": [httpx.Response(status, content=data)]})


@fuzz(200)
@given(doc=HOOK_BODIES, status=STATUSES, data=MEDIA_BYTES, failing=mostly(st.just(False), st.just(True)))
def test_generic_webhook_signed_bodies_are_taken_or_refused(media, doc, status, data, failing):
    body = doc if isinstance(doc, bytes) else as_json(doc)
    request = WebhookRequest("POST", "/hooks/m1/jd", {}, {"x-peakdesk-signature": peakdesk_sign(HOOK_SECRET, body),
                                                          "content-type": "application/json"}, body)
    run(outcome(lambda http: WebhookConnector(HOOK_CONFIG, http, media), request, hook_platform(status, data, failing),
                HOOK_STATUSES))


NOW = int(time.time())
SIGNATURE_HEADERS = st.one_of(
    st.text(max_size=120),
    st.builds("t={},v1={}".format, st.integers(-(10 ** 30), 10 ** 400) | st.just(NOW), st.text(max_size=70)),
    st.builds("v1={},t={}".format, st.text(max_size=70), st.text(max_size=20)),
    st.sampled_from([f"t={NOW},v1=é", f"t={NOW},v1=" + "０" * 64, "t=" + "9" * 5000, f"t={NOW}", ",,,", "t=,v1=",
                     f"t={NOW},v1={'0' * 64},t=1", f"t=١٢٣,v1={'0' * 64}", f"t={10 ** 400},v1={'0' * 64}"]))


@fuzz(150)
@given(header=SIGNATURE_HEADERS, method=st.sampled_from(["POST", "POST", "GET", "PUT", "DELETE", "PATCH"]))
def test_generic_webhook_signature_headers_are_checked_or_refused(header, method):
    body = as_json({"messages": HOOK_MESSAGES[:1]})
    request = WebhookRequest(method, "/hooks/m1/jd", {}, {"x-peakdesk-signature": header}, body)
    result = run(outcome(lambda http: WebhookConnector(HOOK_CONFIG, http), request, None, HOOK_STATUSES))
    assert isinstance(result, Refused)       # none of these is a good signature


# == WhatsApp =======================================================================================
WA_API = "https://graph.test"
WA_SETTINGS = {"phone_number_id": wa.PHONE_NUMBER_ID, "app_secret": wa.APP_SECRET, "verify_token": wa.VERIFY_TOKEN,
               "access_token": wa.TOKEN, "api_base": WA_API, "api_version": wa.VERSION,
               "business_account_id": wa.WABA_ID, "media_budget_s": 5}
WA_STATUSES = {400, 403, 405, 413, 503}
_IMAGE = {"id": "7301", "mime_type": "image/png", "sha256": hashlib.sha256(PNG).hexdigest(), "caption": "看这个"}
WA_MESSAGES = [
    wa.message("text", {"body": "在吗？"}, wamid="w.t", at=NOW),
    wa.message("image", _IMAGE, wamid="w.i", at=NOW),
    wa.message("document", {"id": "7302", "mime_type": "application/pdf", "filename": "发票.pdf"}, wamid="w.d", at=NOW),
    wa.message("audio", {"id": "7303", "mime_type": "audio/ogg; codecs=opus"}, wamid="w.a", at=NOW),
    wa.message("sticker", {"id": "7304", "mime_type": "image/webp"}, wamid="w.s", at=NOW),
    wa.message("interactive", {"type": "button_reply", "button_reply": {"id": "kb-1", "title": "退货"}}, wamid="w.b", at=NOW),
    wa.message("interactive", {"type": "list_reply", "list_reply": {"id": "kb-2", "title": "运费",
                                                                   "description": "运费怎么算？"}}, wamid="w.l", at=NOW),
    wa.message("button", {"text": "是", "payload": "yes"}, wamid="w.bt", at=NOW),
    wa.message("location", {"latitude": 31.23, "longitude": 121.47, "name": "外滩", "address": "上海"}, wamid="w.lo", at=NOW),
    wa.message("contacts", [{"name": {"formatted_name": "李四"}, "phones": [{"phone": "+86 138"}]}], wamid="w.c", at=NOW),
    wa.message("reaction", {"message_id": "w.t", "emoji": "👍"}, wamid="w.r", at=NOW),
    wa.message("system", {"body": "changed number"}, wamid="w.sy", at=NOW),
    wa.message("unsupported", {}, wamid="w.u", at=NOW),
]
WA_STATUS_ROWS = [wa.status("wamid.out.1", "read", at=NOW),
                  wa.status("wamid.out.2", "failed", at=NOW, errors=[{"code": 131047, "title": "Re-engagement",
                                                                     "error_data": {"details": "24 hours"}}])]
WA_NOTES = [wa.notification(WA_MESSAGES[i:i + 3], WA_STATUS_ROWS, [wa.contact("赵敏")]) for i in range(0, len(WA_MESSAGES), 3)]
WA_NAMES = ["from", "id", "timestamp", "type", "text", "body", "image", "mime_type", "sha256", "caption", "filename",
            "messages", "statuses", "contacts", "metadata", "phone_number_id", "errors", "field", "value", "entry"]
WA_INFO = st.fixed_dictionaries({}, optional={
    "url": st.sampled_from([f"{WA_API}/cdn/f", "https://lookaside.fbsbx.com/f", "https://evil.test/f", "ftp://x", "", "::"])
    | st.text(max_size=20) | JSON_VALUES,
    "mime_type": MIMES | JSON_VALUES,
    "sha256": st.sampled_from([hashlib.sha256(PNG).hexdigest(), base64.b64encode(hashlib.sha256(PNG).digest()).decode(),
                               "0" * 64, "xyz"]) | JSON_VALUES,
    "file_size": st.integers(-1, 30 * 1024 * 1024) | JSON_VALUES})


def wa_platform(info_status: int, info: Any, data_status: int, data: bytes) -> Platform:
    def route(request: httpx.Request) -> str:
        return "download" if "/cdn/" in request.url.path or request.url.host.endswith("fbsbx.com") else "info"
    return Platform(route, {"info": [answer_of(info_status, info)], "download": [httpx.Response(data_status, content=data)]})


def wa_connector(media):
    return lambda http: WhatsApp(WA_SETTINGS, http, media)


@fuzz(200)
@given(doc=mostly(mutated(WA_NOTES, WA_NAMES, (0, 4)), JSON_VALUES, st.binary(max_size=100)),
       info_status=STATUSES, info=mostly(WA_INFO, JSON_VALUES, st.just(BOMB)), data_status=STATUSES, data=MEDIA_BYTES)
def test_whatsapp_signed_notifications_are_taken_or_refused(media, doc, info_status, info, data_status, data):
    body = doc if isinstance(doc, bytes) else wa.encode(doc)
    request = WebhookRequest("POST", "/hooks/m1/wa", {}, {"x-hub-signature-256": wa.sign(body)}, body)
    run(outcome(wa_connector(media), request, wa_platform(info_status, info, data_status, data), WA_STATUSES))


@pytest.mark.parametrize("told", [True, 7, ["image/png"], {"x": 1}, None])
def test_whatsapp_media_whose_info_names_no_usable_type_keeps_the_notifications(media, told):
    """Found by the fuzz above: Graph's media info with a mime_type that is not a string crashed
    the connector; the type the notification named is used instead."""
    body = wa.encode(wa.notification([wa.message("image", _IMAGE, wamid="w.i", at=NOW)], [], [wa.contact("赵敏")]))
    request = WebhookRequest("POST", "/hooks/m1/wa", {}, {"x-hub-signature-256": wa.sign(body)}, body)
    result = run(outcome(wa_connector(media), request,
                         wa_platform(200, {"url": f"{WA_API}/cdn/f", "mime_type": told}, 200, PNG), WA_STATUSES))
    assert isinstance(result, WebhookResult) and [m.kind for m in result.inbound] == ["image", "text"]   # + caption


@fuzz(100)
@given(query=st.dictionaries(st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge"]) | st.text(max_size=10),
                             st.text(max_size=40) | st.sampled_from(["subscribe", wa.VERIFY_TOKEN, "1158201444"])),
       header=st.text(max_size=80) | st.just("sha256=" + "0" * 64), method=st.sampled_from(["GET", "POST", "PUT"]))
def test_whatsapp_verification_and_signatures_are_answered_or_refused(query, header, method):
    body = wa.encode(WA_NOTES[0])
    request = WebhookRequest(method, "/hooks/m1/wa", query, {"x-hub-signature-256": header}, body)
    result = run(outcome(wa_connector(None), request, None, WA_STATUSES))
    if method == "GET" and isinstance(result, WebhookResult):
        assert result.body.decode() == query["hub.challenge"] and re.fullmatch(r"[A-Za-z0-9._~-]{1,128}", query["hub.challenge"])
    elif method != "GET":
        assert isinstance(result, Refused)


# == the WeChat Official Account, past decryption ==================================================
WX_CONFIG = WechatOAConfig.model_validate({"app_id": WX_APP_ID, "app_secret": WX_APP_SECRET, "token": WX_TOKEN,
                                           "encoding_aes_key": WX_AES_KEY, "original_id": ORIGINAL_ID,
                                           "welcome_text": "欢迎 Welcome", "api_base": "https://wx.test"})
WX_PLAIN = WX_CONFIG.model_copy(update={"encoding_aes_key": None})
WX_STATUSES = {400, 403, 405, 413}
_HEAD = {"ToUserName": ORIGINAL_ID, "FromUserName": OPENID, "CreateTime": NOW}
WX_MESSAGES = [
    {**_HEAD, "MsgType": "text", "Content": "你好 <b>&amp;", "MsgId": 6054768590064713999},
    {**_HEAD, "MsgType": "image", "PicUrl": "http://mmbiz/x", "MediaId": "media-1", "MsgId": 1},
    {**_HEAD, "MsgType": "voice", "MediaId": "media-2", "Format": "amr", "Recognition": "你好", "MsgId": 2},
    {**_HEAD, "MsgType": "video", "MediaId": "media-3", "ThumbMediaId": "t", "MsgId": 3},
    {**_HEAD, "MsgType": "shortvideo", "MediaId": "media-4", "ThumbMediaId": "t", "MsgId": 4},
    {**_HEAD, "MsgType": "location", "Location_X": "23.134521", "Location_Y": "113.358803", "Scale": 20,
     "Label": "广州", "MsgId": 5},
    {**_HEAD, "MsgType": "link", "Title": "商品", "Description": "看看", "Url": "https://shop/p", "MsgId": 6},
    {**_HEAD, "MsgType": "event", "Event": "subscribe"},
    {**_HEAD, "MsgType": "event", "Event": "CLICK", "EventKey": "menu-1"},
    {**_HEAD, "MsgType": "miniprogrampage", "Title": "x", "MsgId": 7},
]
WX_NAMES = ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "MediaId", "Event",
            "Location_X", "Location_Y", "Url", "Recognition", "Encrypt"]
WX_MEDIA_ANSWER = st.one_of(
    st.tuples(STATUSES, MEDIA_BYTES, MIMES),
    st.tuples(st.just(200), st.sampled_from([
        b'{"errcode": 40007, "errmsg": "invalid media_id"}', b'{"errcode": 1e400}', b'{"errcode": "x"}', b'{"errcode": -1}',
        b'{"video_url": "https://wx.test/v.mp4"}', b'{"video_url": "file:///etc/passwd"}', b'{"video_url": 7}', b"{",
        b'{"errcode": 40001}', b"[]", BOMB]), st.just("application/json")))
WX_TOKEN_ANSWER = st.sampled_from([b'{"access_token": "tok", "expires_in": 7200}', b'{"errcode": 40013, "errmsg": "bad"}',
                                   b'{"access_token": 7}', b'{"access_token": "tok", "expires_in": 1e400}', b"oops",
                                   b'{"errcode": 1e400}', b'{"access_token": "tok", "expires_in": "7200"}', BOMB])


def xml_value(value: Any, style: str) -> str:
    text = str(value)
    if style == "cdata":
        return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"
    if style == "escaped":
        return escape(text)
    if style == "nested":
        return f"<a>{escape(text)}</a>"
    return text                                      # raw: may break the XML, as a platform's bug would


@st.composite
def xml_documents(draw, templates: list, names: list[str]) -> str:
    doc = draw(mutated(templates, names, (0, 3)))
    if not isinstance(doc, dict):
        doc = {"Content": doc}
    fields = [(name, value, draw(mostly(st.sampled_from(["cdata", "escaped"]), st.sampled_from(["raw", "nested"]))))
              for name, value in doc.items() if isinstance(name, str)]
    if draw(mostly(st.just(False), st.just(True))) and fields:
        fields.append(draw(st.sampled_from(fields)))          # a field twice
    root = draw(mostly(st.just("xml"), st.sampled_from(["msg", "x:xml", "XML"])))
    inner = "".join(f"<{n}>{xml_value(v, s)}</{n}>" if re.fullmatch(r"[A-Za-z_][\w.-]*", n) else xml_value(v, "escaped")
                    for n, v, s in fields)
    prolog = draw(mostly(st.sampled_from(["", '<?xml version="1.0" encoding="utf-8"?>']),
                         st.sampled_from(["<!-- c -->", "<?pi x?>", '<!DOCTYPE xml [<!ENTITY e "x">]>', "\ufeff"])))
    namespace = ' xmlns:x="u"' if ":" in root else ""
    return f"{prolog}<{root}{namespace}>{inner}</{root}>"


def wx_platform(token: bytes, answer: tuple) -> Platform:
    status, data, mime = answer

    def route(request: httpx.Request) -> str:
        return {"/cgi-bin/token": "token", "/cgi-bin/media/get": "media"}.get(request.url.path, "file")
    return Platform(route, {"token": [answer_of(200, token)],
                            "media": [answer_of(status, data, mime)],
                            "file": [answer_of(200, MP4, "video/mp4")]})


def wx_connector(config, media):
    return lambda http: WechatOAConnector(config, http, media)


def _check_wechat_reply(result) -> None:
    if isinstance(result, WebhookResult) and result.content_type.startswith("application/xml"):
        from defusedxml.ElementTree import fromstring
        assert fromstring(result.body).tag == "xml"             # the passive reply is well-formed


@fuzz(150)
@given(xml=xml_documents(WX_MESSAGES, WX_NAMES), token=WX_TOKEN_ANSWER, answer=WX_MEDIA_ANSWER,
       nonce=st.from_regex(r"\A[A-Za-z0-9]{1,12}\Z"))
def test_wechat_encrypted_messages_of_any_xml_are_taken_or_refused(media, xml, token, answer, nonce):
    encrypted = wx_encrypt(xml)
    ts = str(int(time.time()))
    query = {"timestamp": ts, "nonce": nonce, "encrypt_type": "aes", "signature": wx_signature(WX_TOKEN, ts, nonce),
             "msg_signature": wx_signature(WX_TOKEN, ts, nonce, encrypted)}
    body = wx_xml({"ToUserName": ORIGINAL_ID, "Encrypt": encrypted}).encode()
    result = run(outcome(wx_connector(WX_CONFIG, media), WebhookRequest("POST", "/hooks/m1/wx", query, {}, body),
                         wx_platform(token, answer), WX_STATUSES))
    _check_wechat_reply(result)


@fuzz(100)
@given(xml=xml_documents(WX_MESSAGES, WX_NAMES), answer=WX_MEDIA_ANSWER)
def test_wechat_plain_messages_of_any_xml_are_taken_or_refused(media, xml, answer):
    ts, nonce = str(int(time.time())), "42"
    query = {"timestamp": ts, "nonce": nonce, "signature": wx_signature(WX_TOKEN, ts, nonce)}
    body = xml.encode("utf-8", "surrogatepass")
    result = run(outcome(wx_connector(WX_PLAIN, media), WebhookRequest("POST", "/hooks/m1/wx", query, {}, body),
                         wx_platform(b'{"access_token": "tok", "expires_in": 7200}', answer), WX_STATUSES))
    _check_wechat_reply(result)


WX_QUERY_NAMES = st.sampled_from(["timestamp", "nonce", "signature", "msg_signature", "echostr", "encrypt_type", "openid"])


@fuzz(100)
@given(changes=st.dictionaries(WX_QUERY_NAMES, st.none() | TEXT | HOSTILE | st.sampled_from(
           ["aes", "raw", str(NOW - 400), "1", "9" * 30, "١٢٣", "12a"]), max_size=3),
       echostr=mostly(st.from_regex(r"\A[0-9]{1,20}\Z"), TEXT, HOSTILE), signed=mostly(st.just(True), st.just(False)),
       method=mostly(st.just("GET"), st.sampled_from(["POST", "HEAD"])), aes=st.booleans())
def test_wechat_queries_and_verification_are_answered_or_refused(changes, echostr, signed, method, aes):
    """The URL check (GET) and the signed query of a message, a few parameters changed."""
    query = {"timestamp": str(int(time.time())), "nonce": "42", "echostr": echostr, "encrypt_type": "aes" if aes else "raw"}
    query = {k: v for k, v in {**query, **changes}.items() if v is not None}
    if signed and query.get("timestamp") and query.get("nonce"):
        query["signature"] = wx_signature(WX_TOKEN, query["timestamp"], query["nonce"])
    body = wx_xml({"ToUserName": ORIGINAL_ID, "Encrypt": wx_encrypt(wx_xml(WX_MESSAGES[0]))}).encode()
    result = run(outcome(wx_connector(WX_CONFIG if aes else WX_PLAIN, None),
                         WebhookRequest(method, "/hooks/m1/wx", query, {}, body), None, WX_STATUSES))
    if isinstance(result, WebhookResult) and method == "GET":
        assert re.fullmatch(rb"[A-Za-z0-9_-]{1,128}", result.body)       # only a harmless echostr is echoed


# == WeCom customer service =========================================================================
KF_CONFIG = WeComConfig.model_validate({"corp_id": CORP_ID, "secret": KF_SECRET, "token": KF_TOKEN,
                                        "encoding_aes_key": KF_AES_KEY, "api_base": "https://kf.test",
                                        "open_kfids": [KF], "max_pages": 2})
KF_STATUSES = {400, 403, 405, 413}
KF_EVENTS = [
    {"ToUserName": CORP_ID, "CreateTime": NOW, "MsgType": "event", "Event": "kf_msg_or_event", "Token": "ENC-T",
     "OpenKfId": KF},
    {"ToUserName": CORP_ID, "CreateTime": NOW, "MsgType": "event", "Event": "kf_account_auth_change"},
    {"ToUserName": CORP_ID, "CreateTime": NOW, "MsgType": "text", "Content": "x"},
]
KF_NAMES = ["ToUserName", "CreateTime", "MsgType", "Event", "Token", "OpenKfId", "Encrypt"]
_KF_MSG = {"msgid": "m-1", "open_kfid": KF, "external_userid": USER, "send_time": NOW, "origin": 3}
KF_SYNC_MESSAGES = [
    {**_KF_MSG, "msgtype": "text", "text": {"content": "你好"}},
    {**_KF_MSG, "msgid": "m-2", "msgtype": "image", "image": {"media_id": "mid-1"}},
    {**_KF_MSG, "msgid": "m-3", "msgtype": "voice", "voice": {"media_id": "mid-2"}},
    {**_KF_MSG, "msgid": "m-4", "msgtype": "file", "file": {"media_id": "mid-3"}},
    {**_KF_MSG, "msgid": "m-5", "msgtype": "location", "location": {"latitude": 23.1, "longitude": 113.3, "name": "广州"}},
    {**_KF_MSG, "msgid": "m-6", "msgtype": "link", "link": {"title": "t", "desc": "d", "url": "https://x"}},
    {**_KF_MSG, "msgid": "m-7", "msgtype": "channels_shop_order", "channels_shop_order": {"order_id": "o", "state": 1}},
    {**_KF_MSG, "msgid": "m-8", "msgtype": "merged_msg", "merged_msg": {"title": "记录"}},
    {**_KF_MSG, "msgid": "m-9", "origin": 4, "msgtype": "event",
     "event": {"event_type": "msg_send_fail", "fail_msgid": "out-1", "fail_type": 4}},
    {**_KF_MSG, "msgid": "m-10", "origin": 5, "msgtype": "text", "text": {"content": "servicer"}},
]
KF_SYNC_NAMES = ["msgid", "open_kfid", "external_userid", "send_time", "origin", "msgtype", "text", "content",
                 "media_id", "event", "event_type", "fail_msgid", "fail_type"]
KF_SYNC = st.one_of(
    st.builds(lambda msgs, cursor, more: {"errcode": 0, "errmsg": "ok", "next_cursor": cursor, "has_more": more,
                                          "msg_list": msgs},
              st.lists(mutated(KF_SYNC_MESSAGES, KF_SYNC_NAMES, (0, 2)), max_size=4),
              st.sampled_from(["c-1", "", 7, None]), st.sampled_from([0, 0, 1, 2, True, "0"])),
    mutated([{"errcode": 0, "next_cursor": "c", "has_more": 0, "msg_list": KF_SYNC_MESSAGES[:3]}],
            ["errcode", "next_cursor", "has_more", "msg_list"], (1, 3)),
    st.sampled_from([{"errcode": 95007, "errmsg": "invalid msg token"}, {"errcode": 45009}, {"errcode": "x"},
                     {"errcode": 1e300}, {"errcode": -1}, BOMB, b"not json", b"[]"]))
KF_NAMES_ANSWER = st.sampled_from([{"errcode": 0, "customer_list": [{"external_userid": USER, "nickname": "小明"}]},
                                   {"errcode": 0, "customer_list": [{"external_userid": 1}, "x", None]},
                                   {"errcode": 0, "customer_list": "x"}, {"errcode": 40001}, {"errcode": 0}, BOMB])
KF_MEDIA = st.tuples(STATUSES, MEDIA_BYTES | st.sampled_from([b'{"errcode": 40007}', b'{"errcode": 1e400}', BOMB]),
                     MIMES | st.just("application/json"), st.sampled_from(
    ["", 'attachment; filename="a.png"', "attachment; filename*=UTF-8''%E5%8F%91%E7%A5%A8.pdf",
     "attachment; filename*=bogus''%ZZ", 'attachment; filename="../../x"', "attachment; filename*=UTF-8''"]))


def kf_platform(sync: Any, names: Any, media_answer: tuple) -> Platform:
    status, data, mime, disposition = media_answer

    def route(request: httpx.Request) -> str:
        return request.url.path.rsplit("/", 1)[-1]
    headers = {"content-type": mime, **({"content-disposition": disposition} if disposition else {})}
    return Platform(route, {"gettoken": [answer_of(200, {"errcode": 0, "access_token": "tok", "expires_in": 7200})],
                            "sync_msg": [answer_of(200, sync)], "batchget": [answer_of(200, names)],
                            "get": [httpx.Response(status, content=data, headers=headers)]})


def kf_signed(ciphertext: str, body: bytes | None = None) -> tuple[dict, bytes]:
    ts, nonce = str(int(time.time())), "1234"
    body = body if body is not None else (f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
                                          f"<Encrypt><![CDATA[{ciphertext}]]></Encrypt></xml>").encode()
    return {"msg_signature": wecom_sign(KF_TOKEN, ts, nonce, ciphertext), "timestamp": ts, "nonce": nonce}, body


def kf_connector(media):
    return lambda http: WeComKfConnector(KF_CONFIG, http, media)


@fuzz(120)
@given(xml=xml_documents(KF_EVENTS, KF_NAMES), sync=KF_SYNC, names=KF_NAMES_ANSWER, media_answer=KF_MEDIA)
def test_wecom_encrypted_events_of_any_xml_are_taken_or_refused(media, xml, sync, names, media_answer):
    query, body = kf_signed(wecom_encrypt(xml.encode("utf-8", "surrogatepass"), CORP_ID, KF_AES_KEY))
    run(outcome(kf_connector(media), WebhookRequest("POST", "/hooks/m1/kf", query, {}, body),
                kf_platform(sync, names, media_answer), KF_STATUSES))


@fuzz(150)
@given(sync=KF_SYNC, names=KF_NAMES_ANSWER, media_answer=KF_MEDIA)
def test_wecom_any_sync_msg_page_is_read_or_answered_503(media, sync, names, media_answer):
    """A genuine callback; what WeCom's sync_msg answers then is fuzzed."""
    query, body = kf_signed(wecom_encrypt(as_json_xml(KF_EVENTS[0]), CORP_ID, KF_AES_KEY))
    result = run(outcome(kf_connector(media), WebhookRequest("POST", "/hooks/m1/kf", query, {}, body),
                         kf_platform(sync, names, media_answer), KF_STATUSES))
    assert isinstance(result, WebhookResult) and result.status in (200, 503)


def as_json_xml(fields: dict) -> bytes:
    return wx_xml(fields).encode()


@fuzz(100)
@given(envelope=xml_documents([{"ToUserName": CORP_ID, "Encrypt": "CIPHERTEXT", "AgentID": 1}], ["Encrypt", "ToUserName"]),
       changes=st.dictionaries(st.sampled_from(["msg_signature", "timestamp", "nonce", "echostr"]),
                               st.none() | TEXT | HOSTILE | st.sampled_from([str(NOW - 400), "a" * 40, "0" * 40]),
                               max_size=2),
       echostr=mostly(st.none(), TEXT, st.sampled_from(["", "+/=", "a b"])),
       method=mostly(st.just("POST"), st.sampled_from(["GET", "DELETE"])))
def test_wecom_envelopes_and_queries_are_answered_or_refused(envelope, changes, echostr, method):
    """A genuine event in an envelope of any XML; the URL check (GET); a few query parameters changed."""
    ciphertext = wecom_encrypt(as_json_xml(KF_EVENTS[1]), CORP_ID, KF_AES_KEY)
    body = envelope.replace("CIPHERTEXT", ciphertext).encode("utf-8", "surrogatepass")
    if method == "GET":
        echostr = echostr if echostr is not None else wecom_encrypt(b"1616140317555161061", CORP_ID, KF_AES_KEY)
        query = {**kf_signed(echostr)[0], "echostr": echostr}
    else:
        query = kf_signed(ciphertext)[0]
    query = {k: v for k, v in {**query, **changes}.items() if v is not None}
    run(outcome(kf_connector(None), WebhookRequest(method, "/hooks/m1/kf", query, {}, body), None, KF_STATUSES))


# == what the fuzz found (regressions: each failed before its fix) ================================
def _hook_request(body: bytes, header: str | None = None) -> WebhookRequest:
    return WebhookRequest("POST", "/hooks/m1/jd", {}, {"x-peakdesk-signature": header or peakdesk_sign(HOOK_SECRET, body)},
                          body)


def _wa_request(*messages: dict) -> WebhookRequest:
    body = wa.encode(wa.notification(list(messages), [], [wa.contact("赵敏")]))
    return WebhookRequest("POST", "/hooks/m1/wa", {}, {"x-hub-signature-256": wa.sign(body)}, body)


def _wx_request(**fields) -> WebhookRequest:
    ts, nonce = str(int(time.time())), "7"
    xml = wx_xml({**_HEAD, "CreateTime": int(ts), "MsgId": 11, **fields})
    return WebhookRequest("POST", "/hooks/m1/wx", {"timestamp": ts, "nonce": nonce,
                                                   "signature": wx_signature(WX_TOKEN, ts, nonce)}, {}, xml.encode())


def _kf_request() -> WebhookRequest:
    query, body = kf_signed(wecom_encrypt(as_json_xml(KF_EVENTS[0]), CORP_ID, KF_AES_KEY))
    return WebhookRequest("POST", "/hooks/m1/kf", query, {}, body)


def _texts(result) -> list[str]:
    return [m.content["text"] for m in result.inbound]


def test_found_generic_webhook_media_the_store_refuses_is_refused_naming_the_field(media):
    body = as_json({"messages": [{**HOOK_MESSAGES[2]}]})      # "application/pdf", but the file is a PNG
    refused = run(outcome(lambda http: WebhookConnector(HOOK_CONFIG, http, media), _hook_request(body),
                          hook_platform(200, PNG, False), HOOK_STATUSES))
    assert isinstance(refused, Refused) and refused.status == 400
    assert refused.reason.startswith("body.messages.0.content.mime: "), refused.reason


@pytest.mark.parametrize("header", [f"t={10 ** 400},v1={'0' * 64}", f"t={NOW},v1=é", f"t={NOW},v1={'0' * 64}"],
                         ids=["t-overflows-a-float", "v1-not-ascii", "wrong-mac"])
def test_found_generic_webhook_signature_that_verify_cannot_compare_is_refused(header):
    body = as_json({"messages": HOOK_MESSAGES[:1]})
    refused = run(outcome(lambda http: WebhookConnector(HOOK_CONFIG, http), _hook_request(body, header), None, HOOK_STATUSES))
    assert isinstance(refused, Refused) and refused.status == 401


def test_found_whatsapp_text_is_cleaned_and_a_choice_too_long_left_out():
    result = run(outcome(wa_connector(None), _wa_request(
        wa.message("text", {"body": "a\x07b\r\nc"}, wamid="w.1", at=NOW),
        wa.message("text", {"body": "\x00"}, wamid="w.2", at=NOW),
        wa.message("contacts", [{"name": {"formatted_name": "李四"}, "phones": True}], wamid="w.3", at=NOW),
        wa.message("interactive", {"type": "button_reply", "button_reply": {"id": "k" * 100, "title": "是"}},
                   wamid="w.4", at=NOW)), None, WA_STATUSES))
    assert _texts(result) == ["ab\nc", "[空消息 empty message]", "👤 李四", "是"]
    assert "choice" not in result.inbound[3].content


def test_found_whatsapp_media_lookup_answered_with_json_nested_too_deep_is_retried(media):
    refused = run(outcome(wa_connector(media), _wa_request(wa.message("image", _IMAGE, wamid="w.i", at=NOW)),
                          wa_platform(200, BOMB, 200, PNG), WA_STATUSES))
    assert isinstance(refused, Refused) and refused.status == 503


@pytest.mark.parametrize("url", ["\x1fhttps://lookaside.fbsbx.com/f", "https://evil.test/f", "http://[::1"])
def test_found_whatsapp_media_url_not_meta_s_or_no_url_at_all_becomes_a_note(media, url):
    result = run(outcome(wa_connector(media), _wa_request(wa.message("image", _IMAGE, wamid="w.i", at=NOW)),
                         wa_platform(200, {"url": url, "mime_type": "image/png"}, 200, PNG), WA_STATUSES))
    assert "not Meta's" in _texts(result)[0]


def test_found_wechat_text_is_cleaned_and_cut_into_parts():
    long = run(outcome(wx_connector(WX_PLAIN, None), _wx_request(MsgType="text", Content="长" * 5000), None, WX_STATUSES))
    assert [len(t) for t in _texts(long)] == [4000, 1000] and [m.message_id for m in long.inbound] == ["11", "11#2"]
    ts, nonce = str(int(time.time())), "7"
    xml = wx_xml({**_HEAD, "CreateTime": int(ts), "MsgType": "text", "Content": "X", "MsgId": 12}).replace(
        "<![CDATA[X]]>", "a&#13;b")        # a carriage return, which XML has no other way to carry
    request = WebhookRequest("POST", "/", {"timestamp": ts, "nonce": nonce, "signature": wx_signature(WX_TOKEN, ts, nonce)},
                             {}, xml.encode())
    assert _texts(run(outcome(wx_connector(WX_PLAIN, None), request, None, WX_STATUSES))) == ["a\nb"]


@pytest.mark.parametrize("token", [b'{"errcode": 1e400}', BOMB])
def test_found_wechat_token_answer_it_cannot_read_leaves_a_note(media, token):
    result = run(outcome(wx_connector(WX_PLAIN, media), _wx_request(MsgType="image", MediaId="m-1"),
                         wx_platform(token, (200, PNG, "image/png")), WX_STATUSES))
    assert isinstance(result, WebhookResult) and result.inbound[0].kind == "text"      # "[图片 image — …]"


def test_found_wecom_sync_msg_odd_fail_type_control_characters_and_deep_json():
    sync = {"errcode": 0, "next_cursor": "c", "has_more": 0, "msg_list": [
        {**KF_SYNC_MESSAGES[8], "event": {"event_type": "msg_send_fail", "fail_msgid": "out-1", "fail_type": [1]}},
        {**KF_SYNC_MESSAGES[0], "text": {"content": "\x00你好\r\n"}}]}
    result = run(outcome(kf_connector(None), _kf_request(), kf_platform(sync, {"errcode": 0}, (200, PNG, "image/png", "")),
                         KF_STATUSES))
    assert [r.error for r in result.receipts] == ["fail_type [1]"] and _texts(result) == ["你好\n"]
    deep = run(outcome(kf_connector(None), _kf_request(), kf_platform(BOMB, {"errcode": 0}, (200, PNG, "image/png", "")),
                       KF_STATUSES))
    assert isinstance(deep, WebhookResult) and deep.status == 503
