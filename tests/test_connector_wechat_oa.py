"""The WeChat Official Account connector against a local WeChat (tests/wechat_oa_server.py), the
real Redis (ChannelState) and the real local attachment store: the URL check, messages in (plain
and safe mode, Chinese text, media), the welcome reply, messages out field by field, the token's
life, WeChat's errors and its 48-hour window, and forged or malformed callbacks refused whole."""
from __future__ import annotations

import asyncio
import base64
import time
from contextlib import asynccontextmanager

import httpx
import pytest
from defusedxml.ElementTree import fromstring
from hypothesis import given, settings, strategies as st
from redis.asyncio import Redis

from connectors.base import Inbound, Outbound, Refused, SendFailed, WebhookRequest
from connectors.support import ChannelState, MerchantMedia
from connectors.wechat_oa import WechatOAConfig, WechatOAConnector
from storage.attachments import ALLOWED, LocalAttachmentStore
from tests.wechat_oa_server import (AES_KEY, APP_ID, APP_SECRET, ORIGINAL_ID, TOKEN, WechatServer, wx_cipher,
                                    wx_decrypt, wx_encrypt, wx_signature, wx_xml)

MERCHANT, OPENID, OTHER = "shop-1", "oyORnuP8q7ou2gfYjqLzSIWZf0rs", "oABCDEFGHIJKLMNOPQRSTUVWXYZ0"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
MP4 = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 2000
AMR = b"#!AMR\n" + b"\x3c" * 500
MP3 = b"ID3\x03\x00\x00\x00" + b"\xff\xfb" * 500


@pytest.fixture
def wx():
    with WechatServer(lifetime_s=60) as server:
        yield server


@pytest.fixture
def env(wx, redis_url, prefix, tmp_path):
    return {"wx": wx, "redis_url": redis_url, "prefix": prefix, "root": tmp_path / "attachments"}


def settings_for(wx: WechatServer, **over) -> dict:
    return {"app_id": APP_ID, "app_secret": APP_SECRET, "token": TOKEN, "encoding_aes_key": AES_KEY,
            "original_id": ORIGINAL_ID, "api_base": wx.url, **over}


@asynccontextmanager
async def channel(env, clock=time.time, **over):
    redis = Redis.from_url(env["redis_url"])
    try:
        async with httpx.AsyncClient() as http:
            media = MerchantMedia(LocalAttachmentStore(env["root"]), MERCHANT)
            state = ChannelState(redis, env["prefix"], MERCHANT, "wx-main")
            config = WechatOAConfig.model_validate(settings_for(env["wx"], **over))
            yield WechatOAConnector(config, http, media, state, clock=clock)
    finally:
        await redis.aclose()


def run(env, body, **over):
    async def main():
        async with channel(env, **over) as connector:
            return await body(connector)
    return asyncio.run(main())


def post(query: dict, body: bytes) -> WebhookRequest:
    return WebhookRequest("POST", "/hooks/shop-1/wx-main", query, {"content-type": "text/xml"}, body)


def receive(env, fields: dict, safe: bool = True, **over):
    query, body = env["wx"].callback(fields, safe=safe)
    if not safe:
        over.setdefault("encoding_aes_key", None)
    return run(env, lambda c: c.webhook(post(query, body)), **over)


def media_message(wx: WechatServer, kind: str, mime: str, data: bytes, **extra) -> dict:
    return {"ToUserName": ORIGINAL_ID, "FromUserName": OPENID, "CreateTime": int(time.time()), "MsgType": kind,
            "MediaId": wx.add_media(mime, data), "MsgId": 6054768590064713999, **extra}


def stored(env) -> list:
    return sorted(p for p in env["root"].rglob("*") if p.is_file()) if env["root"].exists() else []


# -- settings -------------------------------------------------------------------------------------
def test_config_names_the_bad_field_and_never_echoes_a_secret(wx):
    with pytest.raises(Exception) as bad:
        WechatOAConfig.model_validate(settings_for(wx, app_secret="short-secret-值", app_id="wx123"))
    text = str(bad.value)
    assert "app_secret" in text and "app_id" in text and "short-secret" not in text
    with pytest.raises(Exception, match="extra"):
        WechatOAConfig.model_validate(settings_for(wx, aes_key=AES_KEY))
    config = WechatOAConfig.model_validate(settings_for(wx))
    assert config.api_base == wx.url and APP_SECRET not in repr(config) and AES_KEY not in repr(config)
    # what the channel store keeps (gateway/channels_api.py) builds the same channel again
    assert WechatOAConfig.model_validate(config.model_dump(mode="json")) == config
    assert WechatOAConfig.model_fields["api_base"].default == "https://api.weixin.qq.com"


# -- in ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("aes", [AES_KEY, None])
def test_url_verification_answers_the_echostr(env, aes):
    query = env["wx"].verification("5838479218127813673")
    request = WebhookRequest("GET", "/hooks/shop-1/wx-main", query, {}, b"")
    result = run(env, lambda c: c.webhook(request), encoding_aes_key=aes)
    assert result.status == 200 and result.body == b"5838479218127813673" and not result.inbound


def test_wechats_own_sample_message_decrypts(env):
    """The known answer from Tencent's WXBizMsgCrypt sample: token spamtest, the sample key, app id
    wx2c2769f8efd9abc2, signed at 1409735669 (compatibility mode: plain fields beside Encrypt)."""
    encrypt = ("hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFm"
               "OD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU"
               "8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszT"
               "fRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9"
               "ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=")
    body = wx_xml({"ToUserName": ORIGINAL_ID, "FromUserName": OPENID, "CreateTime": 1409735668, "MsgType": "text",
                   "Content": "abcdteT", "MsgId": 6054768590064713728, "Encrypt": encrypt}).encode()
    query = {"timestamp": "1409735669", "nonce": "1320562132", "encrypt_type": "aes",
             "msg_signature": "5d197aaffba7e9b25a30732f161a50dee96bd5fa"}
    result = run(env, lambda c: c.webhook(post(query, body)), clock=lambda: 1409735669.0)
    assert result.inbound == [Inbound(external_id=OPENID, message_id="6054768590064713728", kind="text",
                                      content={"text": "abcdteT"}, at_ms=1409735668000)]


@pytest.mark.parametrize("safe", [True, False])
def test_chinese_text_arrives_as_one_inbound_and_wechat_gets_success(env, safe):
    fields = env["wx"].text(OPENID, "你好，订单 E20261111000123 什么时候发货？🚚 <b>&amp;</b>", msg_id=7001)
    result = receive(env, fields, safe=safe)
    assert result.status == 200 and result.body == b"success" and result.receipts == []
    msg, = result.inbound
    assert (msg.external_id, msg.message_id, msg.kind) == (OPENID, "7001", "text")
    assert msg.content == {"text": "你好，订单 E20261111000123 什么时候发货？🚚 <b>&amp;</b>"}
    assert msg.at_ms == fields["CreateTime"] * 1000


def test_a_retried_callback_is_the_same_message_id(env):
    """WeChat retries a slow callback three times with the same MsgId: the gateway drops repeats by it."""
    fields = env["wx"].text(OPENID, "在吗", msg_id=7002)
    assert receive(env, fields).inbound[0].message_id == receive(env, fields).inbound[0].message_id == "7002"


def test_an_image_is_downloaded_through_the_media_api_and_stored(env):
    result = receive(env, media_message(env["wx"], "image", "image/png", PNG, PicUrl="http://mmbiz.qpic.cn/x"))
    msg, = result.inbound
    assert msg.kind == "image" and msg.content["mime"] == "image/png" and msg.content["size"] == len(PNG)
    assert msg.content["name"] == "wechat-6054768590064713999.png"
    meta, data = asyncio.run(LocalAttachmentStore(env["root"]).get(MERCHANT, msg.content["attachment_id"]))
    assert data == PNG and meta["name"] == msg.content["name"]


@pytest.mark.parametrize("kind", ["video", "shortvideo"])
def test_a_video_is_fetched_from_the_video_url_wechat_answers(env, kind):
    result = receive(env, media_message(env["wx"], kind, "video/mp4", MP4, ThumbMediaId="thumb1"))
    msg, = result.inbound
    assert msg.kind == "video" and msg.content["mime"] == "video/mp4" and msg.content["size"] == len(MP4)


def test_voice_is_stored_and_followed_by_wechats_transcript(env):
    fields = media_message(env["wx"], "voice", "audio/amr", AMR, Format="amr", Recognition="我要退货，谢谢")
    messages = receive(env, fields).inbound
    if "audio/amr" not in ALLOWED:          # a store without AMR: the transcript comes in a note
        msg, = messages
        assert msg.kind == "text" and "语音 voice" in msg.content["text"]
        assert msg.content["text"].endswith("我要退货，谢谢")
        return
    voice, transcript = messages
    assert (voice.kind, voice.content["mime"]) == ("audio", "audio/amr")
    assert voice.content["name"] == "wechat-6054768590064713999.amr"
    assert transcript.message_id == voice.message_id + ":recognition"
    assert transcript.content == {"text": "[语音识别 voice transcript] 我要退货，谢谢"}


def test_media_the_store_refuses_becomes_a_note(env):
    fields = media_message(env["wx"], "image", "image/bmp", b"BM" + b"\x00" * 300)
    msg, = receive(env, fields).inbound
    assert msg.kind == "text" and "图片 image" in msg.content["text"] and "not stored" in msg.content["text"]
    assert stored(env) == []


def test_media_wechat_cannot_find_becomes_a_note(env):
    fields = media_message(env["wx"], "image", "image/png", PNG)
    fields["MediaId"] = "expired-media-id"
    msg, = receive(env, fields).inbound
    assert msg.kind == "text" and "40007" in msg.content["text"]


def test_media_wechat_is_too_slow_to_hand_over_becomes_a_note_in_time(env):
    env["wx"].mode = "slow"
    started = time.monotonic()
    msg, = receive(env, media_message(env["wx"], "image", "image/png", PNG), timeout_s=0.3).inbound
    assert msg.kind == "text" and "did not answer" in msg.content["text"] and stored(env) == []
    assert time.monotonic() - started < 3       # WeChat's 5 s, with room for the gateway to commit


def test_location_and_link_arrive_as_text(env):
    wx = env["wx"]
    base = {"ToUserName": ORIGINAL_ID, "FromUserName": OPENID, "CreateTime": int(time.time())}
    place = receive(env, {**base, "MsgType": "location", "Location_X": "23.134521", "Location_Y": "113.358803",
                          "Scale": 20, "Label": "广州市天河区", "MsgId": 8001}).inbound[0]
    assert place.content == {"text": "[位置 location] 广州市天河区 (23.134521, 113.358803)"}
    link = receive(env, {**base, "MsgType": "link", "Title": "双11 预售", "Description": "电饭煲",
                         "Url": "https://shop.example/s/11", "MsgId": 8002}).inbound[0]
    assert link.content == {"text": "[链接 link] 双11 预售\n电饭煲\nhttps://shop.example/s/11"}
    assert wx.media_gets == 0


WELCOME = "欢迎关注！有问题直接留言 👋 ]]> ok"


def _subscribe(env, safe: bool):
    event = {"ToUserName": ORIGINAL_ID, "FromUserName": OPENID, "CreateTime": int(time.time()),
             "MsgType": "event", "Event": "subscribe", "EventKey": ""}
    result = receive(env, event, safe=safe, welcome_text=WELCOME)
    assert result.inbound == [] and result.content_type.startswith("application/xml")
    return {e.tag: e.text for e in fromstring(result.body)}


def test_subscribe_gets_the_welcome_as_an_encrypted_passive_reply(env):
    outer = _subscribe(env, safe=True)
    assert outer["MsgSignature"] == wx_signature(TOKEN, outer["TimeStamp"], outer["Nonce"], outer["Encrypt"])
    xml, app_id = wx_decrypt(outer["Encrypt"])
    inner = {e.tag: e.text for e in fromstring(xml.encode())}
    assert app_id == APP_ID and inner["ToUserName"] == OPENID and inner["FromUserName"] == ORIGINAL_ID
    assert inner["MsgType"] == "text" and inner["Content"] == WELCOME


def test_subscribe_in_plain_mode_gets_a_plain_passive_reply(env):
    reply = _subscribe(env, safe=False)
    assert (reply["ToUserName"], reply["FromUserName"], reply["MsgType"]) == (OPENID, ORIGINAL_ID, "text")
    assert reply["Content"] == WELCOME and abs(int(reply["CreateTime"]) - time.time()) < 5


@pytest.mark.parametrize("event", ["subscribe", "unsubscribe", "CLICK", "VIEW", "TEMPLATESENDJOBFINISH"])
def test_events_without_a_welcome_make_no_conversation(env, event):
    fields = {"ToUserName": ORIGINAL_ID, "FromUserName": OPENID, "CreateTime": int(time.time()),
              "MsgType": "event", "Event": event, "EventKey": "MENU_HELP"}
    result = receive(env, fields)
    assert result.inbound == [] and result.body == b"success"


# -- out --------------------------------------------------------------------------------------------
def outbound(kind: str, content: dict, to: str = OPENID, key: str = "shop-1/s1/9") -> Outbound:
    return Outbound(external_id=to, kind=kind, content=content, key=key)


def test_text_goes_out_as_utf8_json_field_by_field_and_the_token_is_cached(env):
    wx = env["wx"]
    receive(env, wx.text(OPENID, "请问发票怎么开"))

    async def both(c):
        return [await c.send(outbound("text", {"text": "您好，发票在订单页申请 📄"}, key="shop-1/s1/1")),
                await c.send(outbound("emoji", {"emoji": "👍"}, key="shop-1/s1/2"))]
    assert run(env, both) == ["shop-1/s1/1", "shop-1/s1/2"]     # WeChat gives no message id
    first = wx.sent[0]
    assert first["json"] == {"touser": OPENID, "msgtype": "text", "text": {"content": "您好，发票在订单页申请 📄"}}
    assert "您好".encode() in first["raw"] and b"\\u" not in first["raw"]   # WeChat shows escapes literally
    assert wx.sent[1]["json"]["text"] == {"content": "👍"} and wx.token_calls == 1


def test_rich_product_and_order_are_written_as_text(env):
    wx = env["wx"]
    receive(env, wx.text(OPENID, "有货吗"))

    async def three(c):
        await c.send(outbound("rich", {"html": "<p><b>双11</b> 限时</p><ul><li>满减</li></ul><a href=\"https://shop/s\">会场</a>"}))
        await c.send(outbound("product", {"product_id": "rc-3l", "title": "智能电饭煲 3L", "price": "299.00",
                                          "currency": "CNY", "url": "https://shop/p/rc-3l"}))
        await c.send(outbound("order", {"order_id": "E1", "status": "shipped", "total": "459.00", "currency": "CNY",
                                        "items": [{"title": "电饭煲 5L", "qty": 1}]}))
    run(env, three)
    texts = [s["json"]["text"]["content"] for s in wx.sent]
    assert texts == ["双11 限时\n• 满减\n会场 (https://shop/s)", "智能电饭煲 3L\n299.00 CNY\nhttps://shop/p/rc-3l",
                     "订单 Order E1: shipped\n• 电饭煲 5L × 1\n合计 Total: 459.00 CNY"]


@pytest.mark.parametrize("kind,mime,data,wechat_type", [
    ("image", "image/png", PNG, "image"), ("audio", "audio/mpeg", MP3, "voice"), ("video", "video/mp4", MP4, "video")])
def test_media_is_uploaded_then_sent_by_its_media_id(env, kind, mime, data, wechat_type):
    wx = env["wx"]
    receive(env, wx.text(OPENID, "发张图看看"))

    async def send(c):
        meta = await c.media.store(f"商品图.{mime.split('/')[1]}", mime, data)
        return await c.send(outbound(kind, meta))
    run(env, send)
    upload, = wx.uploads
    assert (upload["type"], upload["mime"], upload["data"]) == (wechat_type, mime, data)
    assert upload["filename"] == f"{kind}.{'mp3' if kind == 'audio' else mime.split('/')[1]}"
    sent = wx.sent[0]["json"]
    assert sent["touser"] == OPENID and sent["msgtype"] == wechat_type
    assert kind != "video" or (sent["video"]["title"], sent["video"]["description"]) == ("商品图.mp4", "")
    assert sent[wechat_type]["media_id"] in wx.media and wx.media[sent[wechat_type]["media_id"]][1] == data


@pytest.mark.parametrize("kind,content,reason", [
    ("file", {"attachment_id": "0" * 32}, "cannot send files"),
    ("audio", "ogg", "not audio/ogg"),
    ("image", {"attachment_id": "f" * 32}, "not in the merchant's store"),
    ("text", {"text": "  "}, "no text"),
])
def test_what_wechat_cannot_take_fails_for_good_before_any_call(env, kind, content, reason):
    async def send(c):
        body = content
        if content == "ogg":
            body = await c.media.store("语音.ogg", "audio/ogg", b"OggS" + b"\x00" * 100)
        return await c.send(outbound(kind, body))
    with pytest.raises(SendFailed) as failed:
        run(env, send)
    assert failed.value.retry is False and reason in failed.value.reason
    assert env["wx"].sent == [] and env["wx"].uploads == []


def test_a_recipient_that_is_not_an_openid_fails_for_good(env):
    with pytest.raises(SendFailed) as failed:
        run(env, lambda c: c.send(outbound("text", {"text": "hi"}, to="../../cgi-bin")))
    assert failed.value.retry is False and "openid" in failed.value.reason


def test_the_token_is_shared_through_the_channel_state(env):
    wx = env["wx"]
    receive(env, wx.text(OPENID, "你好"))
    run(env, lambda c: c.send(outbound("text", {"text": "一"})))
    run(env, lambda c: c.send(outbound("text", {"text": "二"})))      # another gateway, same channel
    assert wx.token_calls == 1 and len(wx.sent) == 2


def test_an_expired_token_is_refreshed_once_and_the_message_sent(env):
    wx = env["wx"]
    receive(env, wx.text(OPENID, "你好"))
    run(env, lambda c: c.send(outbound("text", {"text": "一"})))
    wx.expire_tokens()                                                 # WeChat: 42001 access_token expired
    assert run(env, lambda c: c.send(outbound("text", {"text": "二"}, key="k2"))) == "k2"
    assert wx.token_calls == 2 and wx.token_refusals == 1
    assert [s["json"]["text"]["content"] for s in wx.sent] == ["一", "二"]


def test_the_token_is_renewed_before_wechats_expiry(env):
    wx, now = env["wx"], [time.time()]
    receive(env, wx.text(OPENID, "你好"))

    async def twice(c):
        await c.send(outbound("text", {"text": "一"}))
        now[0] += 7200 - 200                                           # inside the 300 s margin
        await c.send(outbound("text", {"text": "二"}))
    run(env, twice, clock=lambda: now[0])
    assert wx.token_calls == 2


@pytest.mark.parametrize("code,retry,words", [
    (-1, True, "busy"), (45009, True, "quota"), (45011, True, "frequent"),
    (45015, False, "48 hours"), (45047, False, "too many"), (40003, False, "not a follower"),
    (43004, False, "unfollowed"), (48001, False, "permission"), (45002, False, "too long"),
    (61234, False, "WeChat error 61234"),
])
def test_wechat_errors_say_whether_to_retry(env, code, retry, words):
    wx = env["wx"]
    receive(env, wx.text(OPENID, "你好"))
    wx.fail_send.append(code)
    with pytest.raises(SendFailed) as failed:
        run(env, lambda c: c.send(outbound("text", {"text": "稍等"})))
    assert failed.value.retry is retry and words in failed.value.reason


def test_the_48_hour_window_and_the_reply_count_are_wechats_rules(env):
    wx = env["wx"]
    receive(env, wx.text(OPENID, "在吗"))

    async def six(c):
        for i in range(5):
            await c.send(outbound("text", {"text": f"第{i}条"}, key=f"k{i}"))
        await c.send(outbound("text", {"text": "第六条"}))
    with pytest.raises(SendFailed) as too_many:
        run(env, six)
    assert too_many.value.retry is False and "45047" in too_many.value.reason
    receive(env, wx.text(OPENID, "还在吗"))
    wx.offset_s = 48 * 3600 + 60                                       # two days later on WeChat's clock
    with pytest.raises(SendFailed) as late:
        run(env, lambda c: c.send(outbound("text", {"text": "抱歉久等"})))
    assert late.value.retry is False and "48 hours" in late.value.reason and "45015" in late.value.reason


def test_a_customer_who_never_wrote_is_an_invalid_recipient(env):
    with pytest.raises(SendFailed) as failed:
        run(env, lambda c: c.send(outbound("text", {"text": "你好"}, to=OTHER)))
    assert failed.value.retry is False and "40003" in failed.value.reason


@pytest.mark.parametrize("over,words", [({"app_secret": "f" * 32}, "app_secret"),
                                        ({"app_id": "wx0000000000000000"}, "app_id")])
def test_bad_credentials_fail_for_good(env, over, words):
    with pytest.raises(SendFailed) as failed:
        run(env, lambda c: c.send(outbound("text", {"text": "你好"})), **over)
    assert failed.value.retry is False and words in failed.value.reason


@pytest.mark.parametrize("mode,words", [("down", "HTTP 502"), ("reset", "could not be reached"),
                                        ("slow", "did not answer")])
def test_network_faults_are_worth_retrying(env, mode, words):
    env["wx"].mode = mode
    with pytest.raises(SendFailed) as failed:
        run(env, lambda c: c.send(outbound("text", {"text": "你好"})), timeout_s=0.3)
    assert failed.value.retry is True and words in failed.value.reason


# -- forged and malformed callbacks --------------------------------------------------------------
def _image(wx: WechatServer, **over) -> dict:
    return {**media_message(wx, "image", "image/png", PNG), **over}


def _safe(wx, fields, **kw):
    query, body = wx.callback(fields, **kw)
    return "POST", query, body


def _changed(wx, method: str = "POST", body: bytes | None = None, safe: bool = True, **query) -> tuple:
    """A right image callback with query parameters changed (None: left out) or another body."""
    right, right_body = wx.callback(_image(wx), safe=safe)
    changed = {k: v for k, v in {**right, **query}.items() if v is not None}
    return method, changed, right_body if body is None else body


def _get(wx, **query) -> tuple:
    changed = {k: v for k, v in {**wx.verification(), **query}.items() if v is not None}
    return "GET", changed, b""


def _signed(wx, encrypted: str, to: str = ORIGINAL_ID) -> tuple:
    """A safe-mode envelope around `encrypted`, correctly signed: only the decryption can object."""
    query, _ = wx.callback(_image(wx))
    query["msg_signature"] = wx_signature(TOKEN, query["timestamp"], query["nonce"], encrypted)
    return "POST", query, wx_xml({"ToUserName": to, "Encrypt": encrypted}).encode()


def _raw_encrypted(plain: bytes) -> str:
    encryptor = wx_cipher(AES_KEY).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def _replaced(wx, old: bytes, new: bytes) -> tuple:
    method, query, body = _safe(wx, _image(wx))
    return method, query, body.replace(old, new, 1)


def _leaving_out(wx, name: str) -> tuple:
    return _safe(wx, {k: v for k, v in _image(wx).items() if k != name})


NOW = int(time.time())
OTHER_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvut"
BOMB = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
        b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]><xml><Content>&lol3;</Content></xml>')
XXE = (b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
       b'<xml><ToUserName>&xxe;</ToUserName><Encrypt>x</Encrypt></xml>')
INNER = ("<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName><FromUserName><![CDATA[" + OPENID +
         "]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType>{}<MsgId>1</MsgId></xml>")
LONG_LENGTH = b"r" * 16 + (9999).to_bytes(4, "big") + b"<xml/>" + b"\x06" * 6
FORGED = {   # name: (build(wx) -> (method, query, body), words in the reason, status, safe-mode channel)
    "get-bad-signature": (lambda wx: _get(wx, signature="0" * 40), "signature", 403, True),
    "get-without-echostr": (lambda wx: _get(wx, echostr=None), "echostr", 400, True),
    "get-echostr-with-html": (lambda wx: _get(wx, echostr="<script>x</script>"), "echostr", 400, True),
    "missing-timestamp": (lambda wx: _changed(wx, timestamp=None), "timestamp", 400, True),
    "timestamp-not-a-number": (lambda wx: _changed(wx, timestamp="12ab"), "timestamp", 400, True),
    "stale-timestamp-replay": (lambda wx: _safe(wx, _image(wx), timestamp=NOW - 900), "stale or replayed", 403, True),
    "timestamp-from-the-future": (lambda wx: _safe(wx, _image(wx), timestamp=NOW + 900), "timestamp", 403, True),
    "missing-nonce": (lambda wx: _changed(wx, nonce=None), "nonce", 400, True),
    "bad-msg-signature": (lambda wx: _changed(wx, msg_signature="f" * 40), "msg_signature", 403, True),
    "tampered-ciphertext": (lambda wx: _replaced(wx, b"Encrypt><![CDATA[", b"Encrypt><![CDATA[A"),
                            "msg_signature", 403, True),
    "encrypted-with-another-key": (lambda wx: _safe(wx, _image(wx), key=OTHER_KEY), "Encrypt", 403, True),
    "another-app-id": (lambda wx: _safe(wx, _image(wx), app_id="wx0000000000000000"), "another app id", 403, True),
    "encrypt-not-base64": (lambda wx: _signed(wx, "%%%not*base64%%%"), "not base64", 400, True),
    "encrypt-partial-block": (lambda wx: _signed(wx, base64.b64encode(b"x" * 20).decode()), "AES blocks", 400, True),
    "encrypt-bad-padding": (lambda wx: _signed(wx, _raw_encrypted(b"\x00" * 64)), "padding", 403, True),
    "encrypt-length-past-end": (lambda wx: _signed(wx, _raw_encrypted(LONG_LENGTH)), "length", 403, True),
    "missing-encrypt": (lambda wx: _changed(wx, body=b"<xml><ToUserName>gh_10f6c3c3ac5a</ToUserName></xml>"),
                        "Encrypt: missing", 400, True),
    "plain-to-a-safe-channel": (lambda wx: _safe(wx, _image(wx), safe=False), "safe mode", 403, True),
    "encrypted-to-a-plain-channel": (lambda wx: _safe(wx, _image(wx)), "no encoding_aes_key", 400, False),
    "plain-bad-signature": (lambda wx: _changed(wx, safe=False, signature="a" * 40), "signature", 403, False),
    "oversized-body": (lambda wx: _changed(wx, body=b"<xml>" + b"a" * 70_000 + b"</xml>"), "more than", 413, True),
    "truncated-xml": (lambda wx: _changed(wx, body=b"<xml><ToUserName><![CDATA[gh"), "not well-formed", 400, True),
    "not-utf8": (lambda wx: _changed(wx, body=b"<xml><Encrypt>\xff\xfe</Encrypt></xml>"), "not UTF-8", 400, True),
    "billion-laughs": (lambda wx: _changed(wx, body=BOMB), "DTDs and entities", 400, True),
    "external-entity": (lambda wx: _changed(wx, body=XXE), "DTDs and entities", 400, True),
    "entity-inside-the-encryption": (lambda wx: _safe(wx, BOMB.decode()), "Encrypt: DTDs", 400, True),
    "plain-billion-laughs": (lambda wx: _safe(wx, BOMB.decode(), safe=False), "DTDs", 400, False),
    "root-not-xml": (lambda wx: _safe(wx, "<msg><MsgType>text</MsgType></msg>"), "root element", 400, True),
    "missing-from": (lambda wx: _leaving_out(wx, "FromUserName"), "FromUserName: missing", 400, True),
    "from-not-an-openid": (lambda wx: _safe(wx, _image(wx, FromUserName="<img src=x>")), "not an openid", 400, True),
    "missing-msgid": (lambda wx: _leaving_out(wx, "MsgId"), "MsgId: missing", 400, True),
    "msgid-not-a-number": (lambda wx: _safe(wx, _image(wx, MsgId="abc")), "MsgId: not a number", 400, True),
    "createtime-not-a-number": (lambda wx: _safe(wx, _image(wx, CreateTime="yesterday")), "CreateTime", 400, True),
    "another-account": (lambda wx: _safe(wx, _image(wx, ToUserName="gh_000000000000")), "ToUserName", 400, True),
    "envelope-names-another-account": (lambda wx: _replaced(wx, ORIGINAL_ID.encode(), b"gh_000000000000"),
                                       "ToUserName", 400, True),
    "duplicated-field": (lambda wx: _safe(wx, INNER.format("<Content>a</Content><Content>b</Content>")),
                         "appears twice", 400, True),
    "text-without-content": (lambda wx: _safe(wx, INNER.format("")), "Content: missing", 400, True),
    "image-without-media-id": (lambda wx: _safe(wx, _image(wx, MediaId="")), "MediaId: missing", 400, True),
    "bad-coordinates": (lambda wx: _safe(wx, _image(wx, MsgType="location", Location_X="north", Location_Y="1")),
                        "Location_X", 400, True),
    "bad-message-type": (lambda wx: _safe(wx, _image(wx, MsgType="Image<script>")), "MsgType", 400, True),
    "method-put": (lambda wx: _changed(wx, method="PUT", body=b""), "method", 405, True),
}


@pytest.mark.parametrize("name", list(FORGED))
def test_forged_or_malformed_callbacks_are_refused_whole(env, name):
    build, words, status, safe = FORGED[name]
    method, query, body = build(env["wx"])
    request = WebhookRequest(method, "/hooks/shop-1/wx-main", query, {}, body)
    with pytest.raises(Refused) as refused:
        run(env, lambda c: c.webhook(request), **({} if safe else {"encoding_aes_key": None}))
    assert words in refused.value.reason and refused.value.status == status
    assert env["wx"].media_gets == 0 and env["wx"].token_calls == 0 and stored(env) == []


def test_a_refused_image_stores_nothing_while_the_same_one_signed_right_does(env):
    wx = env["wx"]
    fields = _image(wx)
    query, body = wx.callback(fields, app_id="wx0000000000000000")
    with pytest.raises(Refused):
        run(env, lambda c: c.webhook(post(query, body)))
    assert stored(env) == [] and wx.media_gets == 0
    query, body = wx.callback(fields)
    result = run(env, lambda c: c.webhook(post(query, body)))
    assert result.inbound[0].kind == "image" and len(stored(env)) == 2 and wx.media_gets == 1   # file + metadata


FUZZ_CONFIG = WechatOAConfig.model_validate({"app_id": APP_ID, "app_secret": APP_SECRET, "token": TOKEN,
                                             "encoding_aes_key": AES_KEY, "api_base": "http://127.0.0.1:9"})
FUZZ_HTTP = httpx.AsyncClient()     # never used: nothing here gets past the checks to WeChat's API


@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=600), encrypt=st.text(max_size=200))
def test_any_body_is_either_refused_or_understood(body, encrypt):
    """Arbitrary bytes, and arbitrary Encrypt text correctly signed: Refused, never another error."""
    connector = WechatOAConnector(FUZZ_CONFIG, FUZZ_HTTP)
    now = str(int(time.time()))
    signed = {"timestamp": now, "nonce": "1", "encrypt_type": "aes",
              "msg_signature": wx_signature(TOKEN, now, "1", encrypt.strip())}
    enveloped = wx_xml({"ToUserName": ORIGINAL_ID, "Encrypt": encrypt}).encode() if "]]>" not in encrypt else body

    async def main():
        for raw in (body, enveloped):
            with pytest.raises(Refused):
                await connector.webhook(post(signed, raw))
    asyncio.run(main())


def test_the_sample_key_round_trips_through_the_platforms_own_code():
    """The test server's encryption is checked against itself and the connector's, both ways."""
    from connectors.wechat_oa.crypto import MessageCrypt
    xml = "<xml><Content><![CDATA[中文 English 🎉]]></Content></xml>"
    assert wx_decrypt(wx_encrypt(xml)) == (xml, APP_ID)
    assert MessageCrypt(AES_KEY, APP_ID).decrypt(wx_encrypt(xml)) == xml
    assert wx_decrypt(MessageCrypt(AES_KEY, APP_ID).encrypt(xml)) == (xml, APP_ID)
