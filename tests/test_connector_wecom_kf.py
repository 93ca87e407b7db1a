"""The WeCom customer-service connector against a local server playing WeCom (tests/wecom_kf_server.py),
a real Redis (ChannelState) and the real local attachment store (MerchantMedia)."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import time

import httpx
import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from connectors.base import Inbound, Outbound, Receipt, Refused, SendFailed, WebhookRequest
from connectors.support import ChannelState, MerchantMedia
from connectors.wecom_kf import Config, WeComKfConnector
from connectors.wxcrypt import aes_key, decrypt
from connectors.wecom_kf.outbound import split
from storage.attachments import LocalAttachmentStore
from tests.wecom_kf_server import (AES_KEY, CORP_ID, SECRET, TOKEN, WeCom, kf_event_xml, pkcs7, wecom_encrypt,
                                   wecom_sign)

KF, KF2 = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q", "wkAJ2GCAAAxyz"
USER = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw"
OTHER_KEY = base64.b64encode(bytes(range(32))).decode().rstrip("=")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
JPEG = b"\xff\xd8\xff\xe0" + bytes(80)
PDF = b"%PDF-1.4\n%" + "发票 invoice".encode() + bytes(40)
MP4 = b"\x00\x00\x00\x18ftypmp42" + bytes(64)
AMR = b"#!AMR\n" + bytes(32)


def config(wecom: WeCom, **over) -> dict:
    return {"corp_id": CORP_ID, "secret": SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY,
            "api_base": wecom.url, "open_kfids": [KF, KF2], **over}


def post(query: dict, body: bytes, method: str = "POST") -> WebhookRequest:
    return WebhookRequest(method, "/hooks/m1/wecom1", query, {"content-type": "text/xml"}, body)


def reply(text: str, key: str = "m1/s1/8", **over) -> Outbound:
    fields = {"external_id": USER, "kind": "text", "content": {"text": text}, "key": key,
              "reply_to": {"open_kfid": KF}, "last_inbound_ms": int(time.time() * 1000), **over}
    return Outbound(**fields)


@pytest.fixture
def wecom():
    with WeCom() as server:
        yield server


@pytest.fixture
def env(redis_url, prefix, tmp_path):
    store = LocalAttachmentStore(tmp_path / "attachments")

    @contextlib.asynccontextmanager
    async def connector(wecom: WeCom, clock=time.time, **over):
        redis, http = Redis.from_url(redis_url), httpx.AsyncClient()
        try:
            yield WeComKfConnector(config(wecom, **over), http, MerchantMedia(store, "m1"),
                                   ChannelState(redis, prefix, "m1", "wecom1"), clock=clock)
        finally:
            await http.aclose()
            await redis.aclose()

    connector.store = store
    connector.files = lambda: list((tmp_path / "attachments").rglob("*"))
    return connector


def run(coro):
    return asyncio.run(coro)


# -- the handshake and the cryptography -------------------------------------------------------------

def test_tencents_published_vectors_verify_and_decrypt():
    """The sample of WeCom's 加解密方案说明 (corp wx5823bf96d3bd56c7, Token QDG6eK): URL verification
    and a POST, checked by code that shares nothing with the test server."""
    official = {"corp_id": "wx5823bf96d3bd56c7", "secret": "s", "token": "QDG6eK", "encoding_aes_key": AES_KEY}
    query = {"msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "timestamp": "1409659589", "nonce": "263014780",
             "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="}

    async def main():
        async with httpx.AsyncClient() as http:
            connector = WeComKfConnector(official, http, clock=lambda: 1409659600)
            return await connector.webhook(post(query, b"", "GET"))

    assert run(main()).body == b"1616140317555161061"
    encrypted = ("RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3"
                 "TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5g"
                 "sijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQU"
                 "ax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyP"
                 "IGHBZZIs2pDBS8R07+qN+E7Q==")
    message, receive_id = decrypt(aes_key(AES_KEY), encrypted)
    assert receive_id == "wx5823bf96d3bd56c7" and b"<Content><![CDATA[hello]]></Content>" in message
    assert wecom_sign("QDG6eK", "1409659813", "1372623149", encrypted) == "477715d11cdb4164915debcba66cb864d751f3e6"


def test_verification_handshake_answers_the_decrypted_echostr(wecom, env):
    query = wecom.verification("回声 echo 1616140317555161061")
    plus_as_space = {**query, "echostr": query["echostr"].replace("+", " ")}   # a gateway's form-style decoding

    async def main():
        async with env(wecom) as connector:
            return [await connector.webhook(post(q, b"", "GET")) for q in (query, plus_as_space)]

    for result in run(main()):
        assert (result.status, result.body) == (200, "回声 echo 1616140317555161061".encode())


# -- messages in -------------------------------------------------------------------------------------

def test_a_chinese_text_arrives_with_the_customers_name_and_the_account_to_reply_from(wecom, env):
    wecom.nicknames[USER] = "小明 Xiao Ming"
    msgid = wecom.customer_writes(KF, USER, "text", {"content": "你好，我的订单什么时候发货？When will it ship?"},
                                  send_time=1_795_396_703)

    async def main():
        async with env(wecom) as connector:
            return await connector.webhook(post(*wecom.callback(KF)))

    result = run(main())
    assert (result.status, result.body, result.receipts) == (200, b"", [])
    assert result.inbound == [Inbound(external_id=USER, message_id=msgid, kind="text",
                                      content={"text": "你好，我的订单什么时候发货？When will it ship?"},
                                      name="小明 Xiao Ming", thread=KF, at_ms=1_795_396_703_000, reply_to={"open_kfid": KF})]
    [sync] = wecom.syncs
    assert sync["token"] in wecom.msg_tokens and sync["open_kfid"] == KF and sync["limit"] == 1000
    assert "cursor" not in sync      # the first pull starts at the oldest message WeCom keeps


def test_the_cursor_is_kept_per_account_so_a_restart_neither_rereads_nor_skips(env, redis_url):
    with WeCom(page_size=2) as wecom:
        first = [wecom.customer_writes(KF, USER, "text", {"content": f"第{i}条消息"}) for i in range(5)]

        async def pull():
            async with env(wecom) as connector:       # a new connector each time: a restarted gateway
                result = await connector.webhook(post(*wecom.callback(KF)))
                for name, value in result.state_updates.items():   # the gateway, once the messages are in
                    await connector.state.set(name, value)
                return result

        assert [m.message_id for m in run(pull()).inbound] == first          # three pages, has_more followed
        assert [s.get("cursor", "") for s in wecom.syncs][1:] == [wecom.syncs[1]["cursor"], wecom.syncs[2]["cursor"]]
        assert run(pull()).inbound == []

        async def crash_before_commit():           # pulled, but the gateway died before saving the cursor
            async with env(wecom) as connector:
                return await connector.webhook(post(*wecom.callback(KF)))
        lost = [wecom.customer_writes(KF, USER, "text", {"content": "崩溃前的消息"})]
        assert [m.message_id for m in run(crash_before_commit()).inbound] == lost
        assert [m.message_id for m in run(pull()).inbound] == lost            # read again, never skipped
        later = [wecom.customer_writes(KF, USER, "text", {"content": "还有一个问题"})]
        assert [m.message_id for m in run(pull()).inbound] == later


def test_concurrent_callbacks_for_one_account_deliver_each_message_once(wecom, env):
    sent = [wecom.customer_writes(KF, USER, "text", {"content": f"并发 {i}"}) for i in range(4)]

    async def main():
        async with env(wecom) as connector:
            return await asyncio.gather(*(connector.webhook(post(*wecom.callback(KF, nonce=f"n{i}"))) for i in range(3)))

    delivered = [m.message_id for result in run(main()) for m in result.inbound]
    assert delivered == sent


def test_images_video_and_files_are_downloaded_into_the_attachment_store(wecom, env):
    image = wecom.customer_writes(KF, USER, "image", {"media_id": wecom.add_media(PNG, "image/jpeg", "IMG_0001.jpg")})
    video = wecom.customer_writes(KF, USER, "video", {"media_id": wecom.add_media(MP4, "video/mp4", "clip.mp4")})
    pdf_id = wecom.add_media(PDF, "application/octet-stream", "发票 2026.pdf")
    invoice = wecom.customer_writes(KF, USER, "file", {"media_id": pdf_id})
    expired = wecom.customer_writes(KF, USER, "image", {"media_id": "MEDIA_EXPIRED"})
    voice = wecom.customer_writes(KF, USER, "voice", {"media_id": wecom.add_media(AMR, "audio/amr", "voice.amr")})
    where = wecom.customer_writes(KF, USER, "location",
                                  {"latitude": 30.27, "longitude": 120.15, "name": "西湖", "address": "杭州市西湖区"})

    async def main():
        async with env(wecom) as connector:
            result = await connector.webhook(post(*wecom.callback(KF)))
            stored = {m.message_id: await env.store.get("m1", m.content["attachment_id"])
                      for m in result.inbound if "attachment_id" in m.content}
            return {m.message_id: m for m in result.inbound}, stored

    inbound, stored = run(main())
    assert (inbound[image].kind, inbound[image].content["mime"]) == ("image", "image/png")   # the bytes, not the header
    assert stored[image][1] == PNG and stored[video][1] == MP4 and stored[invoice][1] == PDF
    assert inbound[invoice].kind == "file" and inbound[invoice].content["name"] == "发票 2026.pdf"
    assert inbound[invoice].content["mime"] == "application/pdf" and inbound[video].kind == "video"
    assert inbound[expired].kind == "text" and "40007" in inbound[expired].content["text"]
    assert (inbound[voice].kind, inbound[voice].content["mime"]) == ("audio", "audio/amr")   # a voice message
    assert stored[voice][1] == AMR
    assert inbound[where].content == {"text": "[位置 Location] 西湖 杭州市西湖区 (30.27, 120.15)"}


def test_servicers_messages_and_system_events_are_skipped_and_a_send_failure_is_a_receipt(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "接待人员在企业微信里回复"}, origin=5)
    wecom.customer_writes(KF, USER, "event", {"event_type": "enter_session", "welcome_code": "abc"}, origin=4)
    wecom.customer_writes(KF, USER, "event", {"event_type": "msg_send_fail", "fail_msgid": "pd0123", "fail_type": 10}, origin=4)
    mine = wecom.customer_writes(KF, USER, "text", {"content": "客户的消息"})

    async def main():
        async with env(wecom) as connector:
            return await connector.webhook(post(*wecom.callback(KF)))

    result = run(main())
    assert [m.message_id for m in result.inbound] == [mine]
    assert result.receipts == [Receipt(message_id="pd0123", status="failed", error="the customer refused the message")]


@pytest.mark.parametrize("path, fault", [("/cgi-bin/kf/sync_msg", -1), ("/cgi-bin/kf/sync_msg", ("http", 502)),
                                         ("/cgi-bin/kf/sync_msg", "garbled"), ("/cgi-bin/media/get", ("http", 503))])
def test_a_wecom_failure_answers_503_and_keeps_the_cursor_so_the_next_call_delivers(wecom, env, path, fault):
    sent = [wecom.customer_writes(KF, USER, "text", {"content": "第一条"}),
            wecom.customer_writes(KF, USER, "image", {"media_id": wecom.add_media(JPEG, "image/jpeg", "a.jpg")})]
    wecom.fail_next(path, fault)

    async def main():
        async with env(wecom) as connector:
            failed = await connector.webhook(post(*wecom.callback(KF)))
            return failed, await connector.webhook(post(*wecom.callback(KF)))

    failed, retried = run(main())
    assert (failed.status, failed.inbound) == (503, [])
    assert [m.message_id for m in retried.inbound] == sent and retried.status == 200


def test_a_callback_token_past_its_ten_minutes_is_dropped_and_the_pull_goes_on_without_it(wecom, env):
    sent = wecom.customer_writes(KF, USER, "text", {"content": "迟到的回调"})
    query, raw = wecom.callback(KF)
    wecom.msg_tokens.clear()                                   # WeCom no longer knows the Token: 95007

    async def main():
        async with env(wecom) as connector:
            return await connector.webhook(post(query, raw))

    assert [m.message_id for m in run(main()).inbound] == [sent]
    assert [("token" in s) for s in wecom.syncs] == [True, False]


def test_an_unrelated_event_is_acknowledged_without_a_pull(wecom, env):
    xml = (f"<xml><ToUserName>{CORP_ID}</ToUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>"
           f"<Event>kf_account_auth_change</Event></xml>").encode()

    async def main():
        async with env(wecom) as connector:
            return await connector.webhook(post(*wecom.callback(KF, xml=xml)))

    result = run(main())
    assert (result.status, result.body, result.inbound, wecom.syncs) == (200, b"", [], [])


# -- forged and malformed callbacks ------------------------------------------------------------------

def _changed(query: dict, **changes) -> dict:
    out = {**query, **changes}
    return {k: v for k, v in out.items() if v is not None}


def _body_with(ciphertext: str, to_user: str = CORP_ID) -> bytes:
    return f"<xml><ToUserName><![CDATA[{to_user}]]></ToUserName><Encrypt><![CDATA[{ciphertext}]]></Encrypt></xml>".encode()


def _signed(ciphertext: str, body: bytes | None = None) -> tuple[dict, bytes]:
    ts, nonce = str(int(time.time())), "99"
    return {"msg_signature": wecom_sign(TOKEN, ts, nonce, ciphertext), "timestamp": ts, "nonce": nonce}, \
        body if body is not None else _body_with(ciphertext)


def _inner(xml: str) -> tuple[dict, bytes]:
    return _signed(wecom_encrypt(xml.encode(), CORP_ID, AES_KEY))


def _flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def _encrypt_of(body: bytes) -> str:
    return re.search(rb"<Encrypt><!\[CDATA\[(.*?)\]\]>", body).group(1).decode()


BOMB = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><xml><Encrypt>&lol3;</Encrypt></xml>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><Encrypt>&xxe;</Encrypt></xml>"""
NOW = int(time.time())
EVENT = "<ToUserName>{corp}</ToUserName><CreateTime>{t}</CreateTime><MsgType>event</MsgType><Event>kf_msg_or_event</Event>"

# Builders of refused requests: each takes the playing WeCom and gives (method, query, body).
def query_changed(**changes):
    def build(w):
        query, raw = w.callback(KF)
        return "POST", _changed(query, **{k: v(query) if callable(v) else v for k, v in changes.items()}), raw
    return build


def body_changed(change):
    return lambda w: (lambda q, b: ("POST", q, change(b)))(*w.callback(KF))


def body(raw: bytes):
    return lambda w: ("POST", w.callback(KF)[0], raw)


def callback(open_kfid: str = KF, **kw):
    return lambda w: ("POST", *w.callback(open_kfid, **kw))


def signed(ciphertext: str, raw: bytes | None = None):
    return lambda w: ("POST", *_signed(ciphertext, raw))


def inner(xml: str):
    return lambda w: ("POST", *_inner(xml))


def tamper(raw: bytes) -> bytes:
    encrypted = _encrypt_of(raw)
    return raw.replace(encrypted.encode(), (_flip(encrypted[:-2]) + "==").encode())


def verification(**changes):
    return lambda w: ("GET", _changed(w.verification("echo"), **changes), b"")


REFUSALS = {  # name: (build, what the reason names, status)
    "bad signature": (query_changed(msg_signature=lambda q: _flip(q["msg_signature"])), "msg_signature: does not match", 403),
    "signature missing": (query_changed(msg_signature=None), "msg_signature: missing", 403),
    "signature not hex": (query_changed(msg_signature="z" * 40), "msg_signature: 'zzzz", 400),
    "timestamp missing": (query_changed(timestamp=None), "timestamp: missing", 400),
    "timestamp not a number": (query_changed(timestamp="12ab"), "timestamp: '12ab'", 400),
    "nonce missing": (query_changed(nonce=None), "nonce: missing", 400),
    "stale timestamp (replayed an hour later)": (callback(timestamp=NOW - 3600), "stale timestamp", 403),
    "timestamp from the future": (callback(timestamp=NOW + 3600), "ahead of our clock", 403),
    "signed with another Token": (callback(token="AnotherToken1"), "msg_signature: does not match", 403),
    "encrypted with another key": (callback(aes_key=OTHER_KEY), "decryption:", 403),
    "ciphertext tampered with after signing": (body_changed(tamper), "msg_signature: does not match", 403),
    "another corp's receiveid": (callback(receive_id="wwAnotherCorp0001"), "receiveid 'wwAnotherCorp0001'", 403),
    "envelope ToUserName of another corp": (body_changed(lambda b: b.replace(CORP_ID.encode(), b"wwAnotherCorp0001", 1)),
                                            "body: ToUserName", 403),
    "decrypted ToUserName of another corp": (callback(xml=kf_event_xml(KF, "T", corp_id="wwAnotherCorp0001")),
                                             "decrypted message: ToUserName", 403),
    "account not served by this channel": (callback("wkStranger01"), "not one of this channel's accounts", 403),
    "no Encrypt": (body(f"<xml><ToUserName>{CORP_ID}</ToUserName></xml>".encode()), "<Encrypt> is missing", 400),
    "two Encrypt elements": (body_changed(lambda b: b.replace(b"</xml>", b"<Encrypt>AAAA</Encrypt></xml>")),
                             "<Encrypt> appears 2 times", 400),
    "Encrypt holds elements": (signed("", b"<xml><Encrypt><a>x</a></Encrypt></xml>"), "holds elements", 400),
    "empty body": (body(b""), "body: empty", 400),
    "oversized body": (body_changed(lambda b: b.replace(b"</xml>", b"<!--" + b"x" * 70000 + b"--></xml>")), "more than 65536", 413),
    "not XML": (body(b"msg=hello&to=everyone"), "body: not well-formed XML", 400),
    "JSON instead of XML": (body(b'{"Encrypt": "abc"}'), "not well-formed XML", 400),
    "billion laughs": (body(BOMB), "has a DTD", 400),
    "external entity (XXE)": (body(XXE), "has a DTD", 400),
    "root element is not <xml>": (body_changed(lambda b: b.replace(b"<xml>", b"<root>").replace(b"</xml>", b"</root>")),
                                  "root element is <root>", 400),
    "Encrypt is not base64": (signed("!!not*base64!!"), "ciphertext is not base64", 403),
    "Encrypt is not whole AES blocks": (signed(base64.b64encode(bytes(17)).decode()), "AES blocks", 403),
    "bad PKCS#7 padding": (callback(pad=lambda d: pkcs7(d)[:-1] + b"\x07"), "padding", 403),
    "decrypted message is not XML": (callback(xml="这不是 XML".encode()), "decrypted message: not well-formed", 400),
    "decrypted message without Token": (inner(f"<xml>{EVENT.format(corp=CORP_ID, t=NOW)}<OpenKfId>{KF}</OpenKfId></xml>"),
                                        "<Token> is missing", 400),
    "decrypted message without OpenKfId": (inner(f"<xml>{EVENT.format(corp=CORP_ID, t=NOW)}<Token>T</Token></xml>"),
                                           "<OpenKfId> is missing", 400),
    "decrypted CreateTime is not a time": (inner(f"<xml>{EVENT.format(corp=CORP_ID, t='昨天')}<Token>T</Token>"
                                                 f"<OpenKfId>{KF}</OpenKfId></xml>"),
                                           "CreateTime is not a unix time", 400),
    "decrypted message without MsgType": (inner(f"<xml><ToUserName>{CORP_ID}</ToUserName><CreateTime>1</CreateTime></xml>"),
                                          "<MsgType> is missing", 400),
    "method PUT": (lambda w: ("PUT", *w.callback(KF)), "method PUT", 405),
    "verification with a forged echostr": (verification(echostr=wecom_encrypt(b"evil", CORP_ID, AES_KEY)),
                                           "msg_signature: does not match", 403),
    "verification without echostr": (verification(echostr=None), "echostr: missing", 400),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_a_forged_or_malformed_callback_is_refused_and_nothing_is_read_or_stored(wecom, env, case):
    build, reason, status = REFUSALS[case]
    wecom.customer_writes(KF, USER, "image", {"media_id": wecom.add_media(PNG, "image/png", "waiting.png")})
    method, query, body = build(wecom)

    async def main():
        async with env(wecom) as connector:
            with pytest.raises(Refused) as refused:
                await connector.webhook(post(query, body, method))
            return refused.value

    refused = run(main())
    assert reason in refused.reason and refused.status == status, refused.reason
    assert (wecom.syncs, wecom.gettokens, env.files()) == ([], 0, [])


def test_a_replayed_callback_is_refused_after_it_was_accepted(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "一次"})
    query, body = wecom.callback(KF)

    async def main():
        async with env(wecom) as connector:
            first = await connector.webhook(post(query, body))
            with pytest.raises(Refused) as replay:
                await connector.webhook(post(query, body))
            return first, replay.value

    first, replay = run(main())
    assert len(first.inbound) == 1 and "replayed" in replay.reason and len(wecom.syncs) == 1


def test_settings_errors_name_the_field_and_never_echo_a_secret():
    good = {"corp_id": CORP_ID, "secret": SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY}
    with pytest.raises(ValidationError) as short_key:
        Config.model_validate({**good, "encoding_aes_key": AES_KEY[:-1]})
    with pytest.raises(ValidationError) as extra:
        Config.model_validate({**good, "agent_id": 1000002})
    with pytest.raises(ValidationError) as bad_token:
        Config.model_validate({**good, "token": "有空格 token"})
    assert "encoding_aes_key" in str(short_key.value) and AES_KEY[:-1] not in str(short_key.value)
    assert "agent_id" in str(extra.value) and "token" in str(bad_token.value)
    assert SECRET not in repr(Config.model_validate(good))


# -- replies out -------------------------------------------------------------------------------------

def test_a_chinese_reply_is_sent_in_wecoms_format_and_a_retry_cannot_duplicate_it(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "在吗？"})

    async def main():
        async with env(wecom) as connector:
            first = await connector.send(reply("您好！您的订单已发货 📦 顺丰 SF1402298867533"))
            with pytest.raises(SendFailed) as again:       # the worker retried a send whose answer was lost
                await connector.send(reply("您好！您的订单已发货 📦 顺丰 SF1402298867533"))
            return first, again.value

    msgid, again = run(main())
    assert re.fullmatch(r"[0-9a-zA-Z_-]{1,32}", msgid)
    assert wecom.sent == [{"touser": USER, "open_kfid": KF, "msgid": msgid, "msgtype": "text",
                           "text": {"content": "您好！您的订单已发货 📦 顺丰 SF1402298867533"}}]
    assert not again.retry and "msgid duplicated" in again.reason


def test_rich_text_and_cards_go_as_plain_text(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "推荐一下"})
    rich = reply("", kind="rich", key="k1",
                 content={"html": "<b>双11</b> 满减<br>点击 <a href='https://shop/s'>链接</a> &amp; save"})
    product = reply("", kind="product", content={"product_id": "42", "title": "电饭煲 Rice cooker 3L", "price": "299.00",
                                                 "currency": "CNY", "url": "https://shop/p/42"}, key="k2")

    async def main():
        async with env(wecom) as connector:
            await connector.send(rich)
            await connector.send(product)

    run(main())
    assert [m["text"]["content"] for m in wecom.sent] == ["双11 满减\n点击 链接 & save",
                                                          "电饭煲 Rice cooker 3L\n299.00 CNY\nhttps://shop/p/42"]


def test_attachments_are_uploaded_then_sent_by_media_id(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "请发说明书"})

    async def main():
        async with env(wecom) as connector:
            out = []
            for kind, name, mime, data in [("image", "商品图.jpg", "image/jpeg", JPEG),
                                           ("file", "说明书.pdf", "application/pdf", PDF),
                                           ("video", "开箱.mp4", "video/mp4", MP4),
                                           ("audio", "留言.mp3", "audio/mpeg", b"ID3" + bytes(40))]:
                meta = await env.store.put("m1", name, mime, data)
                await connector.send(reply("", kind=kind, content=meta, key=f"m1/s1/{name}"))
                out.append((name, mime, data))
            return out

    expected = run(main())
    assert [(u["filename"], u["mime"], u["data"]) for u in wecom.uploads] == expected
    assert [u["type"] for u in wecom.uploads] == ["image", "file", "video", "file"]   # WeCom's voice takes AMR only
    assert [(m["msgtype"], m[m["msgtype"]]["media_id"]) for m in wecom.sent] == [(u["type"], u["media_id"]) for u in wecom.uploads]


def test_a_long_reply_is_cut_into_parts_and_a_retry_sends_only_the_missing_ones(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "详细说明一下"})
    text = "\n".join(f"第{i}条：这款电饭煲支持预约、保温和快速煮饭功能。" for i in range(90))
    wecom.fail_next("/cgi-bin/kf/send_msg", None, -1)          # the second part meets a busy WeCom

    async def main():
        async with env(wecom) as connector:
            with pytest.raises(SendFailed) as busy:
                await connector.send(reply(text, key="m1/s1/long"))
            return busy.value, await connector.send(reply(text, key="m1/s1/long"))

    busy, msgid = run(main())
    parts = [m["text"]["content"] for m in wecom.sent]
    assert busy.retry and len(parts) == len(split(text)) >= 3 and "".join(parts) == text
    assert all(len(p.encode()) <= 2048 for p in parts) and all(p.endswith("\n") for p in parts[:-1])
    assert len({m["msgid"] for m in wecom.sent}) == len(parts) and wecom.sent[0]["msgid"] == msgid


def test_the_access_token_is_cached_shared_through_state_and_fetched_anew_when_expired(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "你好"})

    async def main():
        async with env(wecom) as connector:
            await connector.send(reply("一", key="k1"))
            await connector.send(reply("二", key="k2"))
            fetched_once = wecom.gettokens
            wecom.expire_tokens()                                   # WeCom says 42001
            await connector.send(reply("三", key="k3"))
        async with env(wecom) as restarted:                         # the token is in the channel's state
            await restarted.send(reply("四", key="k4"))
        async with env(wecom, clock=lambda: time.time() + 7200) as later:   # past expires_in
            await later.send(reply("五", key="k5"))
        return fetched_once

    assert run(main()) == 1
    assert wecom.gettokens == 3 and [m["text"]["content"] for m in wecom.sent] == ["一", "二", "三", "四", "五"]


SEND_ERRORS = [(-1, True, "busy"), (45009, True, "rate limit"), (("http", 502), True, "HTTP 502"), ("garbled", True, "not JSON"),
               (95001, False, "5 messages"), (95002, False, "48 hours"), (95018, False, "servicer took it"),
               (40096, False, "invalid external_userid"), (95000, False, "invalid open_kfid"), (60020, False, "trusted IP"),
               (48002, False, "may not call"), (("http", 403), False, "HTTP 403"), (47001, False, "errcode 47001")]


@pytest.mark.parametrize("fault, retry, reason", SEND_ERRORS, ids=[str(e[0]) for e in SEND_ERRORS])
def test_wecom_errors_map_to_retry_or_not_with_a_readable_reason(wecom, env, fault, retry, reason):
    wecom.customer_writes(KF, USER, "text", {"content": "你好"})
    wecom.fail_next("/cgi-bin/kf/send_msg", fault)

    async def main():
        async with env(wecom) as connector:
            with pytest.raises(SendFailed) as failed:
                await connector.send(reply("收到"))
            return failed.value

    failed = run(main())
    assert (failed.retry, reason in failed.reason) == (retry, True), failed.reason


def test_timeouts_unreachable_wecom_and_a_wrong_secret(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "你好"})
    wecom.fail_next("/cgi-bin/gettoken", "slow")

    async def attempt(**over):
        async with env(wecom, **over) as connector:
            with pytest.raises(SendFailed) as failed:
                await connector.send(reply("收到"))
            return failed.value

    slow = run(attempt(timeout_s=0.3))
    down = run(attempt(api_base="http://127.0.0.1:9"))
    wrong = run(attempt(secret="NotTheKfSecret"))
    assert slow.retry and "did not answer within 0.3 s" in slow.reason
    assert down.retry and "could not reach WeCom" in down.reason
    assert not wrong.retry and "Secret is not valid" in wrong.reason and "NotTheKfSecret" not in wrong.reason


def test_the_window_five_messages_then_wait_and_48_hours(wecom, env):
    wecom.customer_writes(KF, USER, "text", {"content": "我想退货"})

    async def main():
        async with env(wecom) as connector:
            for i in range(5):
                await connector.send(reply(f"第{i + 1}条回复", key=f"k{i}"))
            with pytest.raises(SendFailed) as sixth:
                await connector.send(reply("第6条回复", key="k5"))
            wecom.customer_writes(KF, USER, "text", {"content": "好的，然后呢？"})
            await connector.send(reply("第6条回复", key="k5b"))
            gettokens, sent = wecom.gettokens, len(wecom.sent)
            with pytest.raises(SendFailed) as old:
                await connector.send(reply("两天后", key="k6", last_inbound_ms=int((time.time() - 49 * 3600) * 1000)))
            assert (wecom.gettokens, len(wecom.sent)) == (gettokens, sent)      # not even tried
            wecom.clock = lambda: time.time() + 49 * 3600
            with pytest.raises(SendFailed) as platform_says:
                await connector.send(reply("两天后", key="k7", last_inbound_ms=0))
            return sixth.value, old.value, platform_says.value

    sixth, old, platform_says = run(main())
    assert not sixth.retry and "5 messages" in sixth.reason and len(wecom.sent) == 6
    assert not old.retry and "48 hours" in old.reason
    assert not platform_says.retry and "errcode 95002" in platform_says.reason


def test_a_reply_needs_an_account_of_this_channel(wecom, env):
    async def main():
        async with env(wecom) as connector:
            failures = []
            for over in ({"reply_to": {}}, {"reply_to": {"open_kfid": "wkStranger01"}}):
                with pytest.raises(SendFailed) as failed:
                    await connector.send(reply("你好", **over))
                failures.append(failed.value)
            return failures

    no_account, stranger = run(main())
    assert not no_account.retry and "open_kfid" in no_account.reason
    assert not stranger.retry and "not one of this channel's accounts" in stranger.reason
