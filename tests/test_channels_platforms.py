"""Each built-in connector through the whole cluster (gateway, hosts on Ray, Redis, chDB): the
platform's callback, built and signed (or encrypted) as the platform documents it by a local
server playing the platform, reaches an agent's console; the agent's reply reaches the platform
server in the platform's format. The connectors' own protocol tests are
tests/test_connector_<name>.py."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
import trio

from gateway.client import connect
from tests.gateway_cluster import Peakdesk
from tests.test_routing_ws import online

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("platforms"), "pd-test-platforms", "plt:")
    yield p
    p.stop()


def call_hook(pd: Peakdesk, channel: str, body: bytes, headers: dict | None = None, query: dict | None = None,
              method: str = "POST") -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{pd.port}/hooks/demo/{channel}" + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def channel_with_agent(pd: Peakdesk, connector: str, config: dict) -> tuple[str, str]:
    group, channel = f"g{uuid.uuid4().hex[:8]}", f"{connector.replace('_', '')}{uuid.uuid4().hex[:4]}"
    pd.post("/api/v1/groups", {"group_id": group, "name": group, "routing": {}}, pd.owner_token)
    pd.post("/api/v1/channels", {"connector": connector, "name": f"{connector} 渠道", "channel_id": channel,
                                 "group": group, "config": config}, pd.owner_token)
    username = f"pl{uuid.uuid4().hex[:8]}"
    pd.post("/api/v1/agents", {"username": username, "name": "渠道客服", "password": "correct-horse-9", "groups": [group],
                               "max_concurrent": 5}, pd.owner_token)
    token = pd.post("/api/v1/auth/login", {"merchant": "demo", "username": username,
                                           "password": "correct-horse-9"})["token"]
    return channel, token


async def answer(pd: Peakdesk, token: str, deliver, expect_text: str, reply: str) -> dict:
    """Go online, let the platform deliver, see the customer's text, answer it; the reply's delivery."""
    async with connect(pd.url, token) as a:
        await online(a)
        deliver()
        session = (await a.until("assigned", timeout=20))["session"]
        await a.subscribe(session)
        got = await a.next_message(session)
        assert got["content"]["text"] == expect_text and got["from"]["kind"] == "customer"
        await a.send_message(session, "text", {"text": reply})
        return await a.until("delivery", session=session, timeout=20)


def test_whatsapp(pd):
    from tests import whatsapp_server as wa

    with wa.GraphServer() as graph:
        channel, token = channel_with_agent(pd, "whatsapp", {
            "phone_number_id": wa.PHONE_NUMBER_ID, "app_secret": wa.APP_SECRET, "verify_token": wa.VERIFY_TOKEN,
            "access_token": wa.TOKEN, "api_base": graph.base, "api_version": wa.VERSION,
            "business_account_id": wa.WABA_ID})
        status, body = call_hook(pd, channel, b"", query={"hub.mode": "subscribe", "hub.verify_token": wa.VERIFY_TOKEN,
                                                          "hub.challenge": "1158201444"}, method="GET")
        assert (status, body) == (200, b"1158201444")
        payload = wa.notification([wa.message("text", {"body": "你好，订单到哪了？"}, wamid="wamid.HBgM1")],
                                  contacts=[wa.contact("王小明")])
        raw = wa.encode(payload)

        def deliver():
            headers = {"Content-Type": "application/json", "X-Hub-Signature-256": wa.sign(raw)}
            assert call_hook(pd, channel, raw, headers)[0] == 200
            assert call_hook(pd, channel, raw, {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64})[0] == 403

        delivery = trio.run(answer, pd, token, deliver, "你好，订单到哪了？", "已发货，明天到 arriving tomorrow")
        assert delivery["status"] == "sent"
        (sent,) = graph.seen("messages")
        body = json.loads(sent.body)
        assert (body["messaging_product"], body["to"], body["type"]) == ("whatsapp", wa.CUSTOMER, "text")
        assert body["text"]["body"] == "已发货，明天到 arriving tomorrow"


def test_wecom_customer_service(pd):
    from tests import wecom_kf_server as wk

    kf, user = "wkAJ2GCAAAkf0001", "wmAJ2GCAAAuser0001"
    with wk.WeCom() as wecom:
        channel, token = channel_with_agent(pd, "wecom_kf", {
            "corp_id": wk.CORP_ID, "secret": wk.SECRET, "token": wk.TOKEN, "encoding_aes_key": wk.AES_KEY,
            "api_base": wecom.url, "open_kfids": [kf]})
        query = wecom.verification("8471639087154")
        assert call_hook(pd, channel, b"", query=query, method="GET") == (200, b"8471639087154")
        wecom.customer_writes(kf, user, "text", {"content": "企业微信客服：退货怎么寄？"})

        def deliver():
            query, body = wecom.callback(kf)
            assert call_hook(pd, channel, body, {"Content-Type": "text/xml"}, query)[0] == 200

        delivery = trio.run(answer, pd, token, deliver, "企业微信客服：退货怎么寄？", "请寄到杭州仓 please ship to Hangzhou")
        assert delivery["status"] == "sent"
        (sent,) = wecom.sent
        assert (sent["touser"], sent["open_kfid"], sent["msgtype"]) == (user, kf, "text")
        assert sent["text"]["content"] == "请寄到杭州仓 please ship to Hangzhou"
        assert sent["msgid"].startswith("pd")


def test_wechat_official_account_in_safe_mode(pd):
    from tests import wechat_oa_server as wx

    openid = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    with wx.WechatServer() as wechat:
        channel, token = channel_with_agent(pd, "wechat_oa", {
            "app_id": wx.APP_ID, "app_secret": wx.APP_SECRET, "token": wx.TOKEN, "encoding_aes_key": wx.AES_KEY,
            "original_id": wx.ORIGINAL_ID, "api_base": wechat.url})
        query = wechat.verification("5838479218127813673")
        assert call_hook(pd, channel, b"", query=query, method="GET") == (200, b"5838479218127813673")

        def deliver():
            query, body = wechat.callback(wechat.text(openid, "公众号：发票怎么开？"))
            assert call_hook(pd, channel, body, {"Content-Type": "text/xml"}, query)[0] == 200
            forged = {**query, "msg_signature": "0" * 40}
            assert call_hook(pd, channel, body, {"Content-Type": "text/xml"}, forged)[0] in (401, 403)

        delivery = trio.run(answer, pd, token, deliver, "公众号：发票怎么开？", "订单页点“申请开票” tap Invoice")
        assert delivery["status"] == "sent"
        (sent,) = wechat.sent
        assert sent["json"] == {"touser": openid, "msgtype": "text", "text": {"content": "订单页点“申请开票” tap Invoice"}}
        assert "订单页".encode() in sent["raw"]          # UTF-8 as is: WeChat shows \\u escapes literally


def test_email(pd):
    import redis as sync_redis
    from email.header import Header

    from tests.email_server import ImapServer, SmtpServer

    user, password, shop = "service@shop.example", "imap-pass-秘密".encode().hex(), "service@shop.example"
    with ImapServer(user, password) as imap, SmtpServer() as smtp:
        mailbox = f"T{uuid.uuid4().hex[:8]}"
        imap.append(b"From: old@example.org\r\nMessage-ID: <old@x>\r\n\r\nbefore the channel\r\n", mailbox)
        channel, token = channel_with_agent(pd, "email", {
            "imap_host": "127.0.0.1", "imap_port": imap.port, "imap_tls": "none", "imap_username": user,
            "imap_password": password, "mailbox": mailbox, "smtp_host": "127.0.0.1", "smtp_port": smtp.port,
            "smtp_tls": "none", "from_address": shop, "from_name": "小店客服", "poll_interval_s": 5, "timeout_s": 5})
        r = sync_redis.Redis.from_url(pd.settings.redis_url)
        deadline = time.monotonic() + 30
        while not r.hget(f"plt:m:demo:channel:{channel}:state", "poll_cursor") and time.monotonic() < deadline:
            time.sleep(0.2)           # the first poll marks where the channel starts: old mail stays old
        r.close()
        subject = Header("退货申请 Return request", "utf-8").encode()
        mail = (f"From: =?utf-8?b?5byg5LiJ?= <zhangsan@example.cn>\r\nTo: {shop}\r\nSubject: {subject}\r\n"
                "Message-ID: <c-1@example.cn>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=gbk\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + "电饭煲有划痕，想退货。".encode("gbk") + b"\r\n"

        def deliver():
            imap.append(mail, mailbox)

        async def run():
            async with connect(pd.url, token) as a:
                await online(a)
                deliver()
                session = (await a.until("assigned", timeout=40))["session"]
                await a.subscribe(session)
                got = await a.next_message(session)
                assert "电饭煲有划痕，想退货。" in got["content"]["text"] and "退货申请" in got["content"]["text"]
                await a.send_message(session, "text", {"text": "已为您登记退货 return registered"})
                return await a.until("delivery", session=session, timeout=30)
        delivery = trio.run(run)
        assert delivery["status"] == "sent"
        (sent,) = smtp.received
        message = sent.message
        assert sent.rcpt_tos == ["zhangsan@example.cn"] and message["In-Reply-To"] == "<c-1@example.cn>"
        assert str(message["Subject"]) == "Re: 退货申请 Return request"
        assert "已为您登记退货 return registered" in message.get_body(("plain",)).get_content()
