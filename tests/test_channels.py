"""Channels end to end over the real cluster (gateway, hosts on Ray, Redis, chDB): the generic
webhook channel — a merchant's middleware bridging a platform — signed both ways; a customer's
message reaches an agent once however often the platform retries; the agent's reply reaches the
middleware in its format; receipts and failures reach the agent; forged and malformed calls are
refused with a log line and store nothing. And a third-party connector package, pip-installed
here, is discovered through the `peakdesk.connectors` entry point and carries a conversation
without any change to peakdesk."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgpack
import pytest
import redis as sync_redis
import trio

from gateway.client import connect
from storage import crypto
from storage.webhooks import sign, verify
from tests.gateway_cluster import Peakdesk
from tests.test_routing_ws import online
from tests.test_web import browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.timeout(300)
SECRET = "whsec-middleware-" + "k" * 32
PLUGIN = "pd_echo_connector"


def _customer_id(pd: Peakdesk, channel: str, external_id: str) -> str:
    """The id a channel customer gets: the channel and a pseudonym of their platform id."""
    from storage.channels import ChannelStore

    r = sync_redis.Redis.from_url(pd.settings.redis_url)
    try:
        return ChannelStore(r, "chn:", b"k" * 32).customer_id("demo", channel, external_id)
    finally:
        r.close()


class Middleware:
    """The merchant's middleware: takes peakdesk's signed sends, answers `status`."""

    def __init__(self):
        self.got: list[tuple[dict, dict]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                headers["x-sent-at"] = str(time.time())        # when it arrived here
                outer.got.append((headers, json.loads(body) if body else {}))
                ok = verify(SECRET, headers.get("x-peakdesk-signature", ""), body)
                status = outer.status if ok else 401
                answer = json.dumps({"message_id": f"mw-{len(outer.got)}"} if status == 200 else {"error": "不收 refused"})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(answer.encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """A third-party connector package, installed with pip before the cluster starts."""
    root = tmp_path_factory.mktemp("plugin")
    (root / PLUGIN).mkdir()
    (root / PLUGIN / "__init__.py").write_text(textwrap.dedent('''
        """Echo: a made-up platform. In: {"user", "id", "text"} with header X-Echo-Token. Out: POST {"to", "text"}."""
        import json
        from pydantic import BaseModel
        from connectors.base import Inbound, Refused, SendFailed, WebhookResult

        class Config(BaseModel):
            token: str
            reply_url: str

        class Echo:
            name = "echo"
            Config = Config

            def __init__(self, config, http, media=None, state=None):
                self.config, self.http = config, http

            async def webhook(self, request):
                if request.headers.get("x-echo-token") != self.config.token:
                    raise Refused("token: wrong X-Echo-Token", 403)
                try:
                    m = json.loads(request.body)
                    return WebhookResult(inbound=[Inbound(external_id=m["user"], message_id=m["id"], kind="text",
                                                          content={"text": m["text"]})], body=b"ok")
                except (ValueError, KeyError, TypeError) as exc:
                    raise Refused(f"body: {exc!r}")

            async def send(self, message):
                r = await self.http.post(self.config.reply_url, json={"to": message.external_id,
                                                                      "text": message.content.get("text", "")})
                if r.status_code >= 300:
                    raise SendFailed(f"echo answered {r.status_code}", retry=r.status_code >= 500)
                return r.json()["message_id"]
    '''))
    (root / "pyproject.toml").write_text(textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools>=77"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{PLUGIN.replace("_", "-")}"
        version = "0.1.0"
        [project.entry-points."peakdesk.connectors"]
        echo = "{PLUGIN}:Echo"
    '''))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(root)]
    subprocess.run(pip, check=True, capture_output=True, timeout=120)
    yield
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", PLUGIN.replace("_", "-")],
                   capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory, plugin):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("channels"), "pd-test-channels", "chn:")
    yield p
    p.stop()


@pytest.fixture
def middleware():
    m = Middleware()
    yield m
    m.close()


def hook(pd: Peakdesk, path: str, body: bytes, headers: dict, method: str = "POST") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{pd.port}{path}", data=body if method == "POST" else None,
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def signed(payload: dict, secret: str = SECRET, t: int | None = None) -> tuple[bytes, dict]:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return body, {"Content-Type": "application/json", "X-Peakdesk-Signature": sign(secret, body, t)}


def agent(pd: Peakdesk, group: str) -> str:
    username = f"ch{uuid.uuid4().hex[:8]}"
    pd.post("/api/v1/agents", {"username": username, "name": "渠道客服 Channel agent", "password": "correct-horse-9",
                               "groups": [group], "max_concurrent": 5}, pd.owner_token)
    return pd.post("/api/v1/auth/login", {"merchant": "demo", "username": username,
                                          "password": "correct-horse-9"})["token"]


def new_group(pd: Peakdesk) -> str:
    gid = f"g{uuid.uuid4().hex[:8]}"
    pd.post("/api/v1/groups", {"group_id": gid, "name": gid, "routing": {}}, pd.owner_token)
    return gid


def test_channels_are_managed_with_their_credentials_validated_encrypted_and_never_shown(pd, middleware):
    token = pd.owner_token
    names = [c["name"] for c in pd.request("GET", "/api/v1/connectors", None, token)["items"]]
    assert {"webhook", "echo"} <= set(names)
    bad = [({"connector": "webhook", "name": "抖音", "config": {"secret": "short", "send_url": middleware.url}}, "config.secret"),
           ({"connector": "webhook", "name": "抖音", "config": {"secret": SECRET, "send_url": "ftp://x"}}, "config.send_url"),
           ({"connector": "webhook", "name": "抖音", "config": {"secret": SECRET}}, "config.send_url"),
           ({"connector": "fax", "name": "Fax", "config": {}}, "connector"),
           ({"connector": "webhook", "name": "抖音", "group": "no-such-group",
             "config": {"secret": SECRET, "send_url": middleware.url}}, "group")]
    for body, field in bad:
        answer = pd.request("POST", "/api/v1/channels", body, token, expect=422)
        assert answer["field"] == field, answer
    made = pd.post("/api/v1/channels", {"connector": "webhook", "name": "抖音小店 Douyin", "channel_id": "douyin",
                                        "config": {"secret": SECRET, "send_url": middleware.url}}, token)
    assert made["config"]["secret"] == "***" and made["webhook_path"] == "/hooks/demo/douyin"
    shown = pd.request("GET", "/api/v1/channels/douyin", None, token)
    assert shown["config"] == {"secret": "***", "send_url": middleware.url}
    pd.request("PATCH", "/api/v1/channels/douyin", {"config": {**shown["config"], "timeout_s": 3}}, token)
    r = sync_redis.Redis.from_url(pd.settings.redis_url)
    raw = r.get("chn:m:demo:channel:douyin")
    r.close()
    assert SECRET.encode() not in raw and b"whsec" not in raw            # encrypted at rest
    # the secret survived the PATCH that showed it as "***": the channel still verifies
    body, headers = signed({"messages": []})
    assert hook(pd, "/hooks/demo/douyin", body, headers)[0] == 200
    agent_token = agent(pd, "default")
    assert pd.request("GET", "/api/v1/channels", None, agent_token, expect=403)["error"] == "forbidden"
    pd.request("DELETE", "/api/v1/channels/douyin", None, token)
    assert hook(pd, "/hooks/demo/douyin", body, headers)[0] == 404


def test_a_platform_conversation_through_the_merchants_middleware(pd, middleware, caplog):
    g = new_group(pd)
    pd.post("/api/v1/channels", {"connector": "webhook", "name": "淘宝 Taobao", "channel_id": "taobao", "group": g,
                                 "config": {"secret": SECRET, "send_url": middleware.url}}, pd.owner_token)
    token = agent(pd, g)
    customer = f"tb_{uuid.uuid4().hex[:6]}"
    first = {"customer_id": customer, "message_id": "m-1", "kind": "text", "name": "淘宝买家",
             "content": {"text": "我的电饭煲坏了 my rice cooker broke"}, "reply_to": {"conversation": "tb-conv-9"}}

    async def main():
        async with connect(pd.url, token) as a:
            await online(a)
            body, headers = signed({"messages": [first]})
            assert hook(pd, "/hooks/demo/taobao", body, headers) == (200, '{"ok":true}')
            assert hook(pd, "/hooks/demo/taobao", *signed({"messages": [first]}))[0] == 200   # the platform retries
            assigned = await a.until("assigned", timeout=20)
            session = assigned["session"]
            assert assigned["customer_id"] == _customer_id(pd, "taobao", customer)
            await a.subscribe(session)
            got = await a.next_message(session)
            assert got["content"]["text"] == "我的电饭煲坏了 my rice cooker broke" and got["from"]["kind"] == "customer"

            await a.send_message(session, "text", {"text": "抱歉！我们马上为您换新 we'll replace it"})
            sent = await a.until("delivery", session=session, timeout=15)
            assert sent["status"] == "sent"
            headers, out = middleware.got[-1]     # (the middleware answers 401 to a bad signature)
            assert (out["to"], out["kind"], out["content"]["text"]) == (customer, "text", "抱歉！我们马上为您换新 we'll replace it")
            assert out["reply_to"] == {"conversation": "tb-conv-9"} and out["key"].startswith(f"demo/{session}/")
            # the platform's receipt comes back through the middleware
            receipt = {"receipts": [{"message_id": f"mw-{len(middleware.got)}", "status": "read"}]}
            assert hook(pd, "/hooks/demo/taobao", *signed(receipt))[0] == 200
            assert (await a.until("delivery", session=session, status="read", timeout=15))["seq"] == sent["seq"]

            # the customer writes again: the same conversation
            again = {**first, "message_id": "m-2", "content": {"text": "好的谢谢"}}
            assert hook(pd, "/hooks/demo/taobao", *signed({"messages": [again]}))[0] == 200
            assert (await a.next_message(session))["content"]["text"] == "好的谢谢"

            # the middleware refuses an answer: the agent is told at once, no retry
            middleware.status = 400
            await a.send_message(session, "text", {"text": "还在吗？"})
            failed = await a.until("delivery", session=session, status="failed", timeout=15)
            assert "不收 refused" in failed["error"]
            # the middleware is briefly down: retried, then delivered
            middleware.status = 503
            await a.send_message(session, "text", {"text": "订单已补发 reshipped"})
            with trio.fail_after(15):
                while not any(o["content"].get("text") == "订单已补发 reshipped" for _, o in middleware.got):
                    await trio.sleep(0.1)
            middleware.status = 200
            delivered = await a.until("delivery", session=session, status="sent", timeout=20)
            assert delivered["seq"] > failed["seq"]
            texts = [o["content"].get("text") for _, o in middleware.got]
            assert texts.count("订单已补发 reshipped") >= 2 and texts.count("还在吗？") == 1
            # closed; days later the platform re-sends the first message: no new conversation for it
            await a.close(session)
            await a.until("released", session=session, timeout=10)
            assert hook(pd, "/hooks/demo/taobao", *signed({"messages": [first]}))[0] == 200
            with trio.move_on_after(3) as idle:
                await a.until("assigned", timeout=10)
            assert idle.cancelled_caught
            return session

    session = trio.run(main)
    r = sync_redis.Redis.from_url(pd.settings.redis_url)
    ring = crypto.keyring(r, "chn:")     # logs are sealed with the merchant's key
    logged = [msgpack.unpackb(ring.open("demo", f[b"b"])) for _, f in r.xrange(f"chn:m:demo:log:session:{session}")]
    r.close()
    texts = [m["content"].get("text") for m in logged if m.get("from", {}).get("kind") == "customer"]
    assert texts == ["我的电饭煲坏了 my rice cooker broke", "好的谢谢"]     # the platform's retry: shown once


FORGED = [
    ("no signature", lambda b: (b, {"Content-Type": "application/json"}), 401),
    ("wrong secret", lambda b: (b, {"X-Peakdesk-Signature": sign("x" * 40, b)}), 401),
    ("tampered body", lambda b: (b.replace("坏了".encode(), "好了".encode()), {"X-Peakdesk-Signature": sign(SECRET, b)}), 401),
    ("replayed: an hour old", lambda b: (b, {"X-Peakdesk-Signature": sign(SECRET, b, int(time.time()) - 3600)}), 401),
    ("from the future", lambda b: (b, {"X-Peakdesk-Signature": sign(SECRET, b, int(time.time()) + 3600)}), 401),
    ("signature garbage", lambda b: (b, {"X-Peakdesk-Signature": "v1=zz,t=abc"}), 401),
    ("signature without t", lambda b: (b, {"X-Peakdesk-Signature": "v1=" + "0" * 64}), 401),
]
MALFORMED = [
    ("not JSON", b"{'messages': oops"),
    ("a list", b"[]"),
    ("unknown field", json.dumps({"messages": [], "admin": True}).encode()),
    ("message without id", json.dumps({"messages": [{"customer_id": "c", "kind": "text", "content": {"text": "x"}}]}).encode()),
    ("unknown kind", json.dumps({"messages": [{"customer_id": "c", "message_id": "1", "kind": "exe", "content": {}}]}).encode()),
    ("empty text", json.dumps({"messages": [{"customer_id": "c", "message_id": "1", "kind": "text", "content": {"text": ""}}]}).encode()),
    ("text too long", json.dumps({"messages": [{"customer_id": "c", "message_id": "1", "kind": "text",
                                                "content": {"text": "长" * 4001}}]}).encode()),
    ("control characters", json.dumps({"messages": [{"customer_id": "c", "message_id": "1", "kind": "text",
                                                     "content": {"text": "a\u0000b"}}]}).encode()),
    ("customer id of wrong type", json.dumps({"messages": [{"customer_id": 7, "message_id": "1", "kind": "text",
                                                            "content": {"text": "x"}}]}).encode()),
    ("media with a script URL", json.dumps({"messages": [{"customer_id": "c", "message_id": "1", "kind": "image",
                                                          "content": {"url": "javascript:alert(1)", "name": "a.png",
                                                                      "mime": "image/png"}}]}).encode()),
    ("receipt of an unknown status", json.dumps({"receipts": [{"message_id": "1", "status": "eaten"}]}).encode()),
    ("too many messages", json.dumps({"messages": [{"customer_id": "c", "message_id": str(i), "kind": "text",
                                                    "content": {"text": "x"}} for i in range(101)]}).encode()),
    ("body over 1 MB", json.dumps({"messages": [], "pad": "x" * (1024 * 1024)}).encode()),
    ("deeply nested", b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
]


def test_forged_and_malformed_webhooks_are_refused_logged_and_store_nothing(pd, middleware, caplog):
    pd.post("/api/v1/channels", {"connector": "webhook", "name": "京东 JD", "channel_id": "jd",
                                 "config": {"secret": SECRET, "send_url": middleware.url}}, pd.owner_token)
    good = json.dumps({"messages": [{"customer_id": "jd1", "message_id": "1", "kind": "text",
                                     "content": {"text": "我的快递坏了"}}]}, ensure_ascii=False).encode()
    r = sync_redis.Redis.from_url(pd.settings.redis_url)

    def snapshot():
        return sorted(k for k in r.scan_iter(match="chn:m:demo:*") if b":channel:jd:" in k or b":customer:jd:" in k), \
            r.xlen("chn:jobs")
    before = snapshot()
    cases = [(name, *make(good), status) for name, make, status in FORGED] + \
            [(name, body, {"X-Peakdesk-Signature": sign(SECRET, body)}, 400 if len(body) <= 1024 * 1024 else None)
             for name, body in MALFORMED]
    cases.append(("GET instead of POST", b"", {"X-Peakdesk-Signature": sign(SECRET, b"")}, 405))
    assert len(cases) >= 20
    for name, body, headers, status in cases:
        code, text = hook(pd, "/hooks/demo/jd", body, {"Content-Type": "application/json", **headers},
                          method="GET" if name.startswith("GET") else "POST")
        assert code >= 400 and (status is None or code == status), (name, code, text)
        assert text and "Traceback" not in text, (name, text)
    assert hook(pd, "/hooks/demo/nope", good, {"X-Peakdesk-Signature": sign(SECRET, good)})[0] == 404
    assert hook(pd, "/hooks/other-shop/jd", good, {"X-Peakdesk-Signature": sign(SECRET, good)})[0] == 404
    assert snapshot() == before                                              # nothing stored, nothing queued
    r.close()


def test_a_pip_installed_connector_carries_a_conversation_without_changes_to_peakdesk(pd):
    replies: list[dict] = []

    class Platform(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            replies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"message_id": f"echo-{len(replies)}"}).encode())

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Platform)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        g, ignored = new_group(pd), new_group(pd)
        # the channel is a diversion-rule input like any other: echo conversations go to g,
        # although the channel itself names another group
        pd.request("PATCH", "/api/v1/merchant", {"settings": {"diversion": [
            {"name": "Echo desk", "when": {"channel": "echo"}, "group": g}]}}, pd.owner_token)
        pd.post("/api/v1/channels", {"connector": "echo", "name": "Echo 平台", "channel_id": "echo", "group": ignored,
                                     "config": {"token": "t0ken", "reply_url": f"http://127.0.0.1:{server.server_address[1]}/r"}},
                pd.owner_token)
        token = agent(pd, g)

        async def main():
            async with connect(pd.url, token) as a:
                await online(a)
                body = json.dumps({"user": "e-42", "id": "x1", "text": "插件你好 hello plugin"}).encode()
                assert hook(pd, "/hooks/demo/echo", body, {"X-Echo-Token": "wrong"})[0] == 403
                assert hook(pd, "/hooks/demo/echo", body, {"X-Echo-Token": "t0ken"}) == (200, "ok")
                session = (await a.until("assigned", timeout=20))["session"]
                await a.subscribe(session)
                assert (await a.next_message(session))["content"]["text"] == "插件你好 hello plugin"
                await a.send_message(session, "text", {"text": "收到 got it"})
                await a.until("delivery", session=session, status="sent", timeout=15)
        trio.run(main)
        assert replies == [{"to": "e-42", "text": "收到 got it"}]
    finally:
        server.shutdown()
        server.server_close()


def test_the_console_shows_what_the_platform_did_with_each_answer(pd, middleware, browser):
    from tests.test_web import agent as web_agent, console_login

    pd.post("/api/v1/channels", {"connector": "webhook", "name": "微博 Weibo", "channel_id": "weibo",
                                 "config": {"secret": SECRET, "send_url": middleware.url}}, pd.owner_token)
    _, username = web_agent(pd, "weibo")
    console = console_login(browser, pd, username)
    message = {"customer_id": "wb_1", "message_id": "w-1", "kind": "text", "content": {"text": "微博私信：在吗？"}}
    assert hook(pd, "/hooks/demo/weibo", *signed({"messages": [message]}))[0] == 200
    console.locator("#messages .msg", has_text="微博私信").wait_for(timeout=20000)
    console.fill("#composer", "在的，请讲 go ahead")
    console.press("#composer", "Enter")
    console.locator("#messages .msg.mine[data-delivery='sent']", has_text="go ahead").wait_for(timeout=15000)
    read = {"receipts": [{"message_id": f"mw-{len(middleware.got)}", "status": "read"}]}
    assert hook(pd, "/hooks/demo/weibo", *signed(read))[0] == 200
    console.locator("#messages .msg.mine[data-delivery='read']", has_text="go ahead").wait_for(timeout=15000)
    middleware.status = 400
    console.fill("#composer", "这条发不出去")
    console.press("#composer", "Enter")
    console.locator("#messages .msg.mine[data-delivery='failed']", has_text="这条发不出去").wait_for(timeout=15000)
    console.locator("#messages .msg.system", has_text="未送达").wait_for()
    console.context.close()


def test_a_channel_never_sends_faster_than_its_rate(pd, middleware):
    g = new_group(pd)
    pd.post("/api/v1/channels", {"connector": "webhook", "name": "拼多多 PDD", "channel_id": "pdd", "group": g,
                                 "rate_per_s": 2, "config": {"secret": SECRET, "send_url": middleware.url}}, pd.owner_token)
    assert pd.request("POST", "/api/v1/channels", {"connector": "webhook", "name": "x", "rate_per_s": 0,
                                                   "config": {"secret": SECRET, "send_url": middleware.url}},
                      pd.owner_token, expect=422)["field"] == "rate_per_s"
    token = agent(pd, g)
    message = {"customer_id": "pdd1", "message_id": "p-1", "kind": "text", "content": {"text": "砍一刀"}}

    async def main():
        async with connect(pd.url, token) as a:
            await online(a)
            assert hook(pd, "/hooks/demo/pdd", *signed({"messages": [message]}))[0] == 200
            session = (await a.until("assigned", timeout=20))["session"]
            await a.subscribe(session)
            for i in range(6):
                await a.send_message(session, "text", {"text": f"回复 {i}"})
            for _ in range(6):
                await a.until("delivery", session=session, status="sent", timeout=20)
    trio.run(main)
    seconds = [int(float(h["x-sent-at"])) for h, _ in middleware.got]
    assert len(seconds) == 6 and max(seconds.count(s) for s in set(seconds)) <= 2      # 2 a second, in order
    assert [o["content"]["text"] for _, o in middleware.got] == [f"回复 {i}" for i in range(6)]


def test_a_conversation_claimed_by_a_gateway_that_died_before_opening_it_still_opens(pd, middleware):
    from storage.channels import ChannelStore

    g = new_group(pd)
    pd.post("/api/v1/channels", {"connector": "webhook", "name": "快手 Kuaishou", "channel_id": "kuaishou", "group": g,
                                 "config": {"secret": SECRET, "send_url": middleware.url}}, pd.owner_token)
    token = agent(pd, g)
    r = sync_redis.Redis.from_url(pd.settings.redis_url)
    key = ChannelStore(r, "chn:", b"k" * 32).conversation_key("demo", "kuaishou", "ks1", "")
    r.set(key, "deadbeef00000000deadbeef")      # claimed; the gateway died before the open
    r.close()
    message = {"customer_id": "ks1", "message_id": "k-1", "kind": "text", "content": {"text": "老铁在吗"}}

    async def main():
        async with connect(pd.url, token) as a:
            await online(a)
            assert hook(pd, "/hooks/demo/kuaishou", *signed({"messages": [message]}))[0] == 200
            assigned = await a.until("assigned", timeout=20)
            assert assigned["session"] == "deadbeef00000000deadbeef"
            await a.subscribe(assigned["session"])
            assert (await a.next_message(assigned["session"]))["content"]["text"] == "老铁在吗"
    trio.run(main)
