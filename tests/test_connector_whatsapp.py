"""The WhatsApp connector against a local Graph API (tests/whatsapp_server.py), real Redis for
its state and the real attachment store: the verification handshake, signed notifications in
(Chinese text, media, replies, receipts), forged and malformed ones refused with nothing kept,
replies out field by field, the 24-hour window, error codes, and the access token's renewal."""
from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import time
from contextlib import asynccontextmanager

import httpx
import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from connectors.base import Connector, Inbound, Outbound, Receipt, Refused, SendFailed, WebhookRequest
from connectors.support import ChannelState, MerchantMedia
from connectors.whatsapp import WhatsApp, WhatsAppConfig
from storage.attachments import LocalAttachmentStore
from tests import whatsapp_server as wa
from tests.api_client import run

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + "发票 invoice".encode() * 50
OGG = b"OggS" + b"\x00" * 300
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 200
HOUR = 3600


class Clock:
    def __init__(self):
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def graph():
    with wa.GraphServer() as server:
        yield server


@pytest.fixture
def rig(graph, tmp_path, redis_url, prefix):
    """`async with rig(**config) as (connector, state, media):` over one shared Redis state."""
    @asynccontextmanager
    async def make(clock=None, **config):
        r = aioredis.from_url(redis_url)
        async with httpx.AsyncClient() as http:
            state = ChannelState(r, prefix, "m1", "wa1")
            media = MerchantMedia(LocalAttachmentStore(tmp_path / "attachments"), "m1")
            settings = {"phone_number_id": wa.PHONE_NUMBER_ID, "app_secret": wa.APP_SECRET,
                        "verify_token": wa.VERIFY_TOKEN, "access_token": wa.TOKEN, "api_base": graph.base,
                        "api_version": wa.VERSION, "business_account_id": wa.WABA_ID, **config}
            try:
                yield WhatsApp(settings, http, media, state, clock=clock or Clock()), state, media
            finally:
                await r.aclose()
    return make


def post(payload, *, secret=wa.APP_SECRET, raw: bytes | None = None, signature: str | None = None) -> WebhookRequest:
    body = raw if raw is not None else wa.encode(payload)
    headers = {"content-type": "application/json",
               "x-hub-signature-256": signature if signature is not None else wa.sign(body, secret)}
    return WebhookRequest("POST", "/hooks/m1/wa1", {}, headers, body)


def outbound(kind="text", content=None, to=wa.CUSTOMER, last=None) -> Outbound:
    return Outbound(external_id=to, kind=kind, content=content if content is not None else {"text": "您好"},
                    key="m1/s1/9", last_inbound_ms=int((time.time() - 60) * 1000) if last is None else last)


def stored_files(tmp_path) -> list:
    folder = tmp_path / "attachments"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


# --- the handshake -------------------------------------------------------------------------------

def test_the_connector_fits_the_interface_and_its_config_names_bad_fields():
    assert isinstance(WhatsApp, type) and WhatsApp.name == "whatsapp" and WhatsApp.Config is WhatsAppConfig
    base = {"phone_number_id": "1", "app_secret": "x" * 32, "verify_token": "v" * 8, "access_token": "E" * 30}
    for bad, field in (({"phone_number_id": "+1 555"}, "phone_number_id"), ({"colour": "blue"}, "colour"),
                       ({"token_expires": True}, "app_id"), ({"api_base": "ftp://x"}, "api_base"),
                       ({"app_secret": "short"}, "app_secret")):
        with pytest.raises(ValidationError) as caught:
            WhatsAppConfig.model_validate({**base, **bad})
        assert field in str(caught.value)
    assert "x" * 32 not in repr(WhatsAppConfig.model_validate(base))     # secrets stay out of logs


def test_verification_handshake_answers_the_challenge_as_text(rig):
    async def main():
        async with rig() as (connector, _, _):
            assert isinstance(connector, Connector)
            query = {"hub.mode": "subscribe", "hub.verify_token": wa.VERIFY_TOKEN, "hub.challenge": "1158201444"}
            result = await connector.webhook(WebhookRequest("GET", "/hooks/m1/wa1", query, {}, b""))
            assert (result.status, result.body, result.inbound) == (200, b"1158201444", [])
            assert result.content_type.startswith("text/plain")
    run(main())


def test_the_test_servers_signature_matches_a_published_hmac_vector():
    # HMAC-SHA256(key="secret", "test"), as the whatsapp_sdk documentation prints it
    assert wa.hmac_sha256(b"secret", b"test").hex() == "0329a06b62cd16b33eb6792be8c60b158d89a2ee3a876fce9a881ebb488c0914"


# --- messages in -----------------------------------------------------------------------------------

def test_chinese_text_becomes_an_inbound_whether_escaped_or_raw_utf8(rig):
    text = "你好，我的订单 E2026 什么时候发货？🙏"
    payload = wa.notification([wa.message("text", {"body": text}, wamid="wamid.ABC1", at=1_790_000_000)],
                              contacts=[wa.contact("张伟")])
    async def main():
        async with rig(clock=lambda: 1_790_000_100) as (connector, _, _):
            for body in (wa.encode(payload), wa.json.dumps(payload, ensure_ascii=False).encode()):
                assert b"\\u4f60" in body or "你好".encode() in body
                result = await connector.webhook(post(None, raw=body))
                assert result.status == 200 and result.receipts == []
                assert result.inbound == [Inbound(external_id=wa.CUSTOMER, message_id="wamid.ABC1", kind="text",
                                                  content={"text": text}, name="张伟", at_ms=1_790_000_000_000)]
    run(main())


def test_image_with_caption_is_downloaded_checked_and_stored(rig, graph):
    graph.blobs["7001"] = wa.Blob(PNG, "image/png")
    sha_b64 = base64.b64encode(hashlib.sha256(PNG).digest()).decode()     # webhooks carry it in base64
    payload = wa.notification([wa.message("image", {"id": "7001", "mime_type": "image/png", "sha256": sha_b64,
                                                    "caption": "收到的商品破损了"}, wamid="wamid.IMG1")],
                              contacts=[wa.contact("李娜")])
    async def main():
        async with rig() as (connector, _, media):
            result = await connector.webhook(post(payload))
            image, caption = result.inbound
            assert (image.kind, image.message_id, image.name) == ("image", "wamid.IMG1", "李娜")
            assert image.content["mime"] == "image/png" and image.content["size"] == len(PNG)
            meta, data = await media.read(image.content["attachment_id"])
            assert data == PNG and meta["name"].startswith("whatsapp-image-7001")
            assert (caption.kind, caption.message_id, caption.content) == ("text", "wamid.IMG1#caption",
                                                                           {"text": "收到的商品破损了"})
    run(main())
    info, download = graph.seen("media_info")[0], graph.seen("download")[0]
    assert info.path == f"/{wa.VERSION}/7001" and info.headers["authorization"] == f"Bearer {wa.TOKEN}"
    assert info.query["appsecret_proof"] == wa.hmac_sha256(wa.APP_SECRET.encode(), wa.TOKEN.encode()).hex()
    assert download.headers["authorization"] == f"Bearer {wa.TOKEN}"


def test_document_voice_note_and_sticker_keep_their_names_and_types(rig, graph):
    graph.blobs.update({"7002": wa.Blob(PDF, "application/pdf"), "7003": wa.Blob(OGG, "audio/ogg; codecs=opus"),
                        "7004": wa.Blob(WEBP, "image/webp")})
    payload = wa.notification([
        wa.message("document", {"id": "7002", "mime_type": "application/pdf", "filename": "发票/2024.pdf"}, wamid="w.D"),
        wa.message("audio", {"id": "7003", "mime_type": "audio/ogg; codecs=opus", "voice": True}, wamid="w.A"),
        wa.message("sticker", {"id": "7004", "mime_type": "image/webp", "animated": False}, wamid="w.S")])
    async def main():
        async with rig() as (connector, _, media):
            doc, voice, sticker = (await connector.webhook(post(payload))).inbound
            assert (doc.kind, doc.content["name"], doc.content["mime"]) == ("file", "发票_2024.pdf", "application/pdf")
            assert (voice.kind, voice.content["mime"]) == ("audio", "audio/ogg")
            assert (sticker.kind, sticker.content["mime"]) == ("image", "image/webp")
            assert (await media.read(doc.content["attachment_id"]))[1] == PDF
    run(main())


def test_interactive_replies_come_back_as_the_choice_they_picked(rig):
    payload = wa.notification([
        wa.message("interactive", {"type": "button_reply", "button_reply": {"id": "invoice-request", "title": "怎么开发票？"}},
                   wamid="w.B"),
        wa.message("interactive", {"type": "list_reply", "list_reply": {
            "id": "compare|zh|rc-3l|rc-5l", "title": "3L和5L电饭煲哪个更适合三口之家使…",
            "description": "3L和5L的电饭煲哪一个更适合三口之家每天煮饭使用呢？"}}, wamid="w.L"),
        wa.message("button", {"text": "查看物流", "payload": "track"}, wamid="w.T")])
    async def main():
        async with rig() as (connector, _, _):
            button, row, quick = (await connector.webhook(post(payload))).inbound
            assert button.content == {"text": "怎么开发票？", "choice": "invoice-request"}
            assert row.content == {"text": "3L和5L的电饭煲哪一个更适合三口之家每天煮饭使用呢？", "choice": "compare|zh|rc-3l|rc-5l"}
            assert quick.content == {"text": "查看物流"}
    run(main())


def test_location_contacts_and_unknown_types_become_text_and_reactions_are_ignored(rig):
    payload = wa.notification([
        wa.message("location", {"latitude": 31.2304, "longitude": 121.4737, "name": "外滩", "address": "上海市黄浦区"},
                   wamid="w.Loc"),
        wa.message("contacts", [{"name": {"formatted_name": "王芳"}, "phones": [{"phone": "+86 139 0000 0000"}]}],
                   wamid="w.Con"),
        wa.message("reaction", {"message_id": "wamid.HBgN0001", "emoji": "👍"}, wamid="w.R"),
        {"from": wa.CUSTOMER, "id": "w.U", "timestamp": str(int(time.time())), "type": "unsupported",
         "errors": [{"code": 131051, "title": "Message type unknown"}]}])
    async def main():
        async with rig() as (connector, _, _):
            place, card, unknown = (await connector.webhook(post(payload))).inbound
            assert place.content["text"].startswith("📍 外滩 上海市黄浦区\n31.230400,121.473700")
            assert card.content == {"text": "👤 王芳 +86 139 0000 0000"}
            assert unknown.message_id == "w.U" and "unsupported" in unknown.content["text"]
    run(main())


def test_statuses_become_receipts(rig):
    failed = {"code": 131047, "title": "Re-engagement message", "error_data": {"details": "24 hours have passed"}}
    payload = wa.notification(statuses=[wa.status("wamid.1", "sent"), wa.status("wamid.1", "delivered"),
                                        wa.status("wamid.1", "read"), wa.status("wamid.2", "failed", errors=[failed]),
                                        wa.status("wamid.3", "deleted")])
    async def main():
        async with rig() as (connector, _, _):
            result = await connector.webhook(post(payload))
            assert result.inbound == []
            assert result.receipts == [Receipt("wamid.1", "sent"), Receipt("wamid.1", "delivered"),
                                       Receipt("wamid.1", "read"),
                                       Receipt("wamid.2", "failed", "131047 Re-engagement message: 24 hours have passed")]
    run(main())


def test_other_webhook_fields_are_acknowledged_and_ignored(rig):
    payload = {"object": "whatsapp_business_account", "entry": [{"id": wa.WABA_ID, "changes": [
        {"field": "message_template_status_update", "value": {"event": "APPROVED", "message_template_id": 1}}]}]}
    async def main():
        async with rig() as (connector, _, _):
            result = await connector.webhook(post(payload))
            assert (result.status, result.inbound, result.receipts) == (200, [], [])
    run(main())


def test_media_that_cannot_be_kept_becomes_a_note_for_the_agent(rig, graph, tmp_path):
    graph.blobs.update({
        "8001": wa.Blob(PNG, "image/png", file_size=25 * 1024 * 1024),              # too big: not even fetched
        "8002": wa.Blob(b"MZ\x90\x00" + b"\x00" * 50, "application/x-msdownload"),  # the store refuses programs
        "8003": wa.Blob(PNG, "image/png", url="https://evil.example/steal")})      # the token goes nowhere else
    payload = wa.notification([
        wa.message("image", {"id": "8001", "mime_type": "image/png"}, wamid="w.big"),
        wa.message("document", {"id": "8002", "mime_type": "application/x-msdownload", "filename": "setup.exe"},
                   wamid="w.exe"),
        wa.message("image", {"id": "8003", "mime_type": "image/png"}, wamid="w.evil"),
        wa.message("video", {"id": "8004", "mime_type": "video/mp4"}, wamid="w.gone")])
    async def main():
        async with rig() as (connector, _, _):
            notes = (await connector.webhook(post(payload))).inbound
            assert [n.kind for n in notes] == ["text"] * 4
            for note, why in zip(notes, ("20 MiB", "mime", "not Meta's", "does not exist")):
                assert "could not be kept" in note.content["text"] and why in note.content["text"], note
    run(main())
    assert [s.path for s in graph.seen("download")] == ["/cdn/8002"] and stored_files(tmp_path) == []


def test_a_transient_media_failure_answers_503_and_keeps_nothing(rig, graph, tmp_path):
    graph.blobs.update({"7101": wa.Blob(PNG, "image/png"), "7102": wa.Blob(PDF, "application/pdf")})
    graph.fail("download", 500, 131016, "Service unavailable")
    payload = wa.notification([wa.message("image", {"id": "7101", "mime_type": "image/png"}, wamid="w.1"),
                               wa.message("document", {"id": "7102", "mime_type": "application/pdf"}, wamid="w.2")])
    async def main():
        async with rig() as (connector, _, _):
            with pytest.raises(Refused) as caught:
                await connector.webhook(post(payload))
            assert caught.value.status == 503 and "131016" in caught.value.reason
            assert stored_files(tmp_path) == []
            assert len((await connector.webhook(post(payload))).inbound) == 2      # WhatsApp's retry works
    run(main())


def test_a_corrupt_download_is_refused_for_a_retry(rig, graph, tmp_path):
    graph.blobs["7201"] = wa.Blob(PNG, "image/png", sha256=hashlib.sha256(b"other").hexdigest())
    payload = wa.notification([wa.message("image", {"id": "7201", "mime_type": "image/png"}, wamid="w.c")])
    async def main():
        async with rig() as (connector, _, _):
            with pytest.raises(Refused) as caught:
                await connector.webhook(post(payload))
            assert caught.value.status == 503 and "SHA-256" in caught.value.reason
    run(main())
    assert stored_files(tmp_path) == []


# --- forged and malformed notifications ----------------------------------------------------------

def _good() -> dict:
    return wa.notification([wa.message("text", {"body": "在吗"}, wamid="w.t"),
                            wa.message("image", {"id": "7301", "mime_type": "image/png"}, wamid="w.i")],
                           contacts=[wa.contact("赵敏")])


def _msg(p: dict, n: int = 0) -> dict:
    return p["entry"][0]["changes"][0]["value"]["messages"][n]


def _edit(change):
    def build():
        payload = _good()
        change(payload)
        return post(payload)
    return build


def _get(**query):
    base = {"hub.mode": "subscribe", "hub.verify_token": wa.VERIFY_TOKEN, "hub.challenge": "42"}
    return lambda: WebhookRequest("GET", "/hooks/m1/wa1", {k: v for k, v in {**base, **query}.items() if v is not None},
                                  {}, b"")


def _signed(raw: bytes):
    return lambda: post(None, raw=raw)


def _tampered():
    body = wa.encode(_good())
    return post(None, raw=body.replace("在吗".encode("unicode_escape"), b"\\u6211"), signature=wa.sign(body))


REFUSED = {
    "no signature": (lambda: post(_good(), signature=""), "missing", 403),
    "sha1 signature": (lambda: post(_good(), signature="sha1=" + "a" * 40), "sha256=", 403),
    "signature not hex": (lambda: post(_good(), signature="sha256=" + "z" * 64), "64 hex", 403),
    "signature cut short": (lambda: post(_good(), signature=wa.sign(wa.encode(_good()))[:-1]), "64 hex", 403),
    "another app's secret": (lambda: post(_good(), secret="0" * 32), "does not match", 403),
    "body altered after signing": (_tampered, "does not match", 403),
    "signature of another body": (lambda: post(_good(), signature=wa.sign(b"{}")), "does not match", 403),
    "oversized body": (_signed(b" " * (3 * 1024 * 1024 + 1)), "over the 3 MiB", 413),
    "not JSON": (_signed(b"<xml>hello</xml>"), "not JSON", 400),
    "invalid UTF-8": (_signed(b'{"object": "\xff\xfe"}'), "not JSON", 400),
    "nesting bomb": (_signed(b"[" * 5000 + b"]" * 5000), "not JSON", 400),
    "NaN": (_signed(b'{"object": NaN}'), "not JSON", 400),
    "top-level array": (_signed(b"[1, 2]"), "not a JSON object", 400),
    "another object": (_edit(lambda p: p.update(object="page")), "object", 400),
    "no entry": (_edit(lambda p: p.pop("entry")), "entry", 400),
    "empty entry": (_edit(lambda p: p.update(entry=[])), "entry", 400),
    "changes not a list": (_edit(lambda p: p["entry"][0].update(changes={"field": "messages"})), "changes", 400),
    "another product": (_edit(lambda p: p["entry"][0]["changes"][0]["value"].update(messaging_product="instagram")),
                        "messaging_product", 400),
    "no metadata": (_edit(lambda p: p["entry"][0]["changes"][0]["value"].pop("metadata")), "metadata", 400),
    "another phone number": (_edit(lambda p: p["entry"][0]["changes"][0]["value"]["metadata"].update(
        phone_number_id="100000000000001")), "phone_number_id", 403),
    "another business account": (_edit(lambda p: p["entry"][0].update(id="999999999999")), "business account", 403),
    "message without from": (_edit(lambda p: _msg(p).pop("from")), "messages.0.from", 400),
    "message id a number": (_edit(lambda p: _msg(p).update(id=12345)), "messages.0.id", 400),
    "from not a phone number": (_edit(lambda p: _msg(p).update({"from": "+86 138-0013"})), "from", 400),
    "timestamp not digits": (_edit(lambda p: _msg(p).update(timestamp="yesterday")), "timestamp", 400),
    "timestamp a number": (_edit(lambda p: _msg(p).update(timestamp=int(time.time()))), "timestamp", 400),
    "image without its object": (_edit(lambda p: _msg(p, 1).pop("image")), "has no 'image'", 400),
    "sha256 not a digest": (_edit(lambda p: _msg(p, 1)["image"].update(sha256="not-a-hash!")), "sha256", 400),
    "empty text": (_edit(lambda p: _msg(p)["text"].update(body="")), "text.body", 400),
    "stale timestamp (replay)": (_edit(lambda p: _msg(p).update(timestamp=str(int(time.time()) - 9 * 86400))),
                                 "replay", 400),
    "timestamp in the future": (_edit(lambda p: _msg(p).update(timestamp=str(int(time.time()) + 2 * 86400))),
                                "future", 400),
    "status without id": (_edit(lambda p: p["entry"][0]["changes"][0]["value"].update(
        statuses=[{"status": "read", "timestamp": "1", "recipient_id": "1"}])), "statuses.0.id", 400),
    "contact wa_id a number": (_edit(lambda p: p["entry"][0]["changes"][0]["value"]["contacts"][0].update(
        wa_id=8613800138000)), "contacts.0.wa_id", 400),
    "GET wrong verify token": (_get(**{"hub.verify_token": "guess"}), "verify_token", 403),
    "GET not subscribe": (_get(**{"hub.mode": "unsubscribe"}), "hub.mode", 400),
    "GET no challenge": (_get(**{"hub.challenge": None}), "hub.challenge", 400),
    "GET challenge with markup": (_get(**{"hub.challenge": "<script>alert(1)</script>"}), "hub.challenge", 400),
    "PUT": (lambda: WebhookRequest("PUT", "/hooks/m1/wa1", {}, {}, b"{}"), "method", 405),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_forged_or_malformed_webhooks_are_refused_and_nothing_is_kept(case, rig, graph, tmp_path):
    build, words, status = REFUSED[case]
    graph.blobs["7301"] = wa.Blob(PNG, "image/png")

    async def main():
        async with rig() as (connector, _, _):
            with pytest.raises(Refused) as caught:
                await connector.webhook(build())
            assert words in caught.value.reason and caught.value.status == status, caught.value.reason
            assert "Traceback" not in caught.value.reason and len(caught.value.reason) < 400
    run(main())
    assert graph.requests == [] and stored_files(tmp_path) == []       # no download, no attachment


def test_a_good_notification_with_one_bad_part_yields_nothing(rig, graph, tmp_path):
    graph.blobs["7301"] = wa.Blob(PNG, "image/png")
    payload = _good()
    other = copy.deepcopy(payload["entry"][0]["changes"][0])
    other["value"]["metadata"]["phone_number_id"] = "100000000000001"
    payload["entry"][0]["changes"].append(other)

    async def main():
        async with rig() as (connector, _, _):
            assert len((await connector.webhook(post(_good()))).inbound) == 2   # the good part alone is fine
            with pytest.raises(Refused) as caught:
                await connector.webhook(post(payload))
            assert "changes.1.value.metadata.phone_number_id" in caught.value.reason
    run(main())
    assert len(graph.seen("download")) == 1 and len(stored_files(tmp_path)) == 2    # the first webhook's only


# --- replies out ---------------------------------------------------------------------------------

def test_a_text_reply_goes_out_in_the_cloud_api_format(rig, graph):
    async def main():
        async with rig() as (connector, _, _):
            return await connector.send(outbound(content={"text": "您好，您的包裹已发出 📦 SF1402298867533"}))
    assert run(main()) == "wamid.HBgN0001"
    sent = graph.seen("messages")[0]
    assert sent.path == f"/{wa.VERSION}/{wa.PHONE_NUMBER_ID}/messages"
    assert sent.headers["authorization"] == f"Bearer {wa.TOKEN}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.query["appsecret_proof"] == wa.hmac_sha256(wa.APP_SECRET.encode(), wa.TOKEN.encode()).hex()
    assert sent.json == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": wa.CUSTOMER,
                         "type": "text", "text": {"body": "您好，您的包裹已发出 📦 SF1402298867533", "preview_url": False}}


def test_choices_go_out_as_reply_buttons_or_a_list_and_cards_as_links(rig, graph):
    short = [{"id": "invoice-request", "question": "怎么开发票？"}, {"id": "refund", "question": "如何退款"}]
    long = short + [{"id": "compare|zh|rc-3l|rc-5l", "question": "3L和5L的电饭煲哪一个更适合三口之家每天煮饭使用呢？"},
                    {"id": "delivery", "question": "多久能到"}]
    async def main():
        async with rig() as (connector, _, _):
            await connector.send(outbound(content={"text": "您是想问以下哪个问题？", "choices": short}))
            await connector.send(outbound(content={"text": "您是想问以下哪个问题？", "choices": long}))
            await connector.send(outbound(content={"text": "发票说明", "cards": [
                {"type": "link", "title": "开票指南", "url": "https://shop.example/invoice"}]}))
    run(main())
    buttons, listed, cards = (s.json for s in graph.seen("messages"))
    assert buttons["type"] == "interactive" and buttons["interactive"] == {
        "type": "button", "body": {"text": "您是想问以下哪个问题？"}, "action": {"buttons": [
            {"type": "reply", "reply": {"id": "invoice-request", "title": "怎么开发票？"}},
            {"type": "reply", "reply": {"id": "refund", "title": "如何退款"}}]}}
    action = listed["interactive"]["action"]
    assert listed["interactive"]["type"] == "list" and len(action["button"]) <= 20
    rows = action["sections"][0]["rows"]
    assert [r["id"] for r in rows] == [c["id"] for c in long] and all(len(r["title"]) <= 24 for r in rows)
    assert rows[2]["description"] == "3L和5L的电饭煲哪一个更适合三口之家每天煮饭使用呢？"
    assert cards["text"]["body"] == "发票说明\n🔗 开票指南 https://shop.example/invoice"


def test_rich_text_goes_out_with_whatsapp_marks(rig, graph):
    async def main():
        async with rig() as (connector, _, _):
            await connector.send(outbound("rich", {"html": '<p><b>双11</b> <i>限时</i> <a href="https://shop/s">特卖</a></p>'}))
    run(main())
    assert graph.seen("messages")[0].json["text"]["body"] == "*双11* _限时_ 特卖 (https://shop/s)"


def test_files_are_uploaded_then_sent_by_media_id(rig, graph):
    async def main():
        async with rig() as (connector, _, media):
            image = await media.store("小票.png", "image/png", PNG)
            pdf = await media.store("发票 2024.pdf", "application/pdf", PDF)
            webp = await media.store("表情.webp", "image/webp", WEBP)
            for kind, meta in (("image", image), ("file", pdf), ("image", webp)):
                await connector.send(outbound(kind, meta))
    run(main())
    uploads, sends = graph.seen("upload"), [s.json for s in graph.seen("messages")]
    assert uploads[0].path == f"/{wa.VERSION}/{wa.PHONE_NUMBER_ID}/media"
    assert uploads[0].form["messaging_product"][2] == b"whatsapp" and uploads[0].form["type"][2] == b"image/png"
    assert uploads[0].form["file"] == ("小票.png", "image/png", PNG)
    assert uploads[1].form["file"] == ("发票 2024.pdf", "application/pdf", PDF)
    assert sends[0]["type"] == "image" and sends[0]["image"] == {"id": "900001"}
    assert sends[1]["type"] == "document" and sends[1]["document"] == {"id": "900002", "filename": "发票 2024.pdf"}
    assert sends[2]["type"] == "document"            # WhatsApp images are JPEG or PNG: WebP goes as a file


def test_the_24_hour_window_is_enforced_before_calling_whatsapp(rig, graph):
    now_ms = time.time() * 1000
    async def main():
        async with rig() as (connector, _, _):
            with pytest.raises(SendFailed) as caught:
                await connector.send(outbound(last=int(now_ms - 25 * HOUR * 1000)))
            assert not caught.value.retry and "24 hours" in caught.value.reason and "template" in caught.value.reason
            assert graph.requests == []
            assert await connector.send(outbound(last=int(now_ms - 23 * HOUR * 1000)))
            graph.fail("messages", 400, 131047, "Re-engagement message")       # WhatsApp's own verdict
            with pytest.raises(SendFailed) as caught:
                await connector.send(outbound(last=0))
            assert not caught.value.retry and "24 hours" in caught.value.reason
    run(main())


ERRORS = [(429, 130429, True), (400, 131056, True), (400, 80007, True), (500, 131000, True), (503, 131016, True),
          (500, 1, True), (503, 2, True), (401, 190, False), (400, 131026, False), (400, 131051, False),
          (400, 100, False), (400, 131047, False), (400, 131030, False), (400, 424242, False), (502, 424242, True)]


@pytest.mark.parametrize("status,code,retry", ERRORS, ids=[f"{c}-{s}" for s, c, _ in ERRORS])
def test_graph_errors_map_to_retry_or_not(status, code, retry, rig, graph):
    graph.fail("messages", status, code, "something happened")
    async def main():
        async with rig() as (connector, _, _):
            with pytest.raises(SendFailed) as caught:
                await connector.send(outbound())
            assert caught.value.retry is retry and str(code) in caught.value.reason
    run(main())


def test_timeouts_unreachable_and_garbled_answers_are_retried(rig, graph):
    graph.slow = 1.0
    async def main():
        async with rig(timeout_s=0.2) as (connector, _, _):
            with pytest.raises(SendFailed) as caught:
                await connector.send(outbound())
            assert caught.value.retry and "no answer within 0.2 s" in caught.value.reason
        graph.slow = 0
        graph.fail("messages", 502, raw=b"<html>Bad Gateway</html>")
        async with rig() as (connector, _, _):
            with pytest.raises(SendFailed) as caught:
                await connector.send(outbound())
            assert caught.value.retry and "502" in caught.value.reason
        async with rig(api_base="http://127.0.0.1:9") as (connector, _, _):
            with pytest.raises(SendFailed) as caught:
                await connector.send(outbound())
            assert caught.value.retry and "unreachable" in caught.value.reason
    run(main())


def test_what_can_never_go_is_not_retried(rig, graph):
    async def main():
        async with rig() as (connector, _, _):
            for message, words in ((outbound(to="user@example.com"), "not a WhatsApp id"),
                                   (outbound("note", {"text": "内部备注"}), "can't be sent"),
                                   (outbound("file", {"attachment_id": "0" * 32}), "not found"),
                                   (outbound(content={"text": "   "}), "empty")):
                with pytest.raises(SendFailed) as caught:
                    await connector.send(message)
                assert not caught.value.retry and words in caught.value.reason
    run(main())
    assert graph.requests == []


# --- the access token ----------------------------------------------------------------------------

def test_a_revoked_permanent_token_is_not_retried(rig, graph):
    graph.tokens.clear()
    async def main():
        async with rig() as (connector, _, _):
            with pytest.raises(SendFailed) as caught:
                await connector.send(outbound())
            assert not caught.value.retry and "access token" in caught.value.reason and "190" in caught.value.reason
    run(main())


def test_an_expiring_token_is_renewed_ahead_and_shared_through_state(rig, graph):
    graph.tokens[wa.TOKEN] = time.time() + 50 * wa.DAY
    clock = Clock()
    async def main():
        async with rig(clock=clock, token_expires=True, app_id=wa.APP_ID) as (first, state, _):
            await first.send(outbound())
            assert '"EAAGrenewedSystemUserToken0001"' in await state.get("access_token")
            async with rig(token_expires=True, app_id=wa.APP_ID) as (second, _, _):    # another gateway
                await second.send(outbound())
            clock.offset = 31 * wa.DAY               # under 30 days left: renew again, from the renewed one
            await first.send(outbound(last=0))
    run(main())
    exchanges = graph.seen("exchange")
    assert [e.query["fb_exchange_token"] for e in exchanges] == [wa.TOKEN, "EAAGrenewedSystemUserToken0001"]
    assert exchanges[0].query == {"grant_type": "fb_exchange_token", "client_id": wa.APP_ID,
                                  "client_secret": wa.APP_SECRET, "set_token_expires_in_60_days": "true",
                                  "fb_exchange_token": wa.TOKEN}
    assert [s.headers["authorization"][-4:] for s in graph.seen("messages")] == ["0001", "0001", "0002"]


def test_after_a_190_the_token_another_gateway_renewed_is_used(rig, graph):
    clock = Clock()
    async def main():
        async with rig(token_expires=True, app_id=wa.APP_ID) as (first, _, _):
            await first.send(outbound())                                  # renewed to …0001, kept in memory
            clock.offset = 31 * wa.DAY
            async with rig(clock=clock, token_expires=True, app_id=wa.APP_ID) as (second, _, _):
                await second.send(outbound(last=0))                       # renewed to …0002, in the state
            del graph.tokens["EAAGrenewedSystemUserToken0001"]          # revoked
            assert await first.send(outbound())
    run(main())
    assert [s.headers["authorization"][-4:] for s in graph.seen("messages")] == ["0001", "0002", "0001", "0002"]


def test_an_expired_token_cannot_be_renewed_and_says_so(rig, graph):
    graph.tokens[wa.TOKEN] = time.time() - 1
    async def main():
        async with rig(token_expires=True, app_id=wa.APP_ID) as (connector, _, _):
            with pytest.raises(SendFailed) as caught:
                await connector.send(outbound())
            assert not caught.value.retry and "renewing the access token" in caught.value.reason
    run(main())
    assert graph.seen("messages") == []


def test_concurrent_webhooks_download_in_parallel_without_mixing(rig, graph):
    for n in range(6):
        graph.blobs[f"75{n:02d}"] = wa.Blob(PNG + bytes([n]), "image/png")
    payloads = [wa.notification([wa.message("image", {"id": f"75{n:02d}", "mime_type": "image/png"}, wamid=f"w.{n}")])
                for n in range(6)]
    async def main():
        async with rig() as (connector, _, media):
            results = await asyncio.gather(*(connector.webhook(post(p)) for p in payloads))
            for n, result in enumerate(results):
                assert (await media.read(result.inbound[0].content["attachment_id"]))[1] == PNG + bytes([n])
    run(main())


def test_concurrent_sends_renew_the_token_once(rig, graph):
    async def main():
        async with rig(token_expires=True, app_id=wa.APP_ID) as (connector, _, _):
            await asyncio.gather(*(connector.send(outbound()) for _ in range(5)))
    run(main())
    assert len(graph.seen("exchange")) == 1 and len(graph.seen("messages")) == 5
