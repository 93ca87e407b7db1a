"""Customers and agents over real websockets, through the gateway actor and session actors on
Ray, with real Redis and chDB: every message type, exactly-once resume, hostile frames."""
from __future__ import annotations

import pytest
import trio

from tests.gateway_cluster import Peakdesk, connected

pytestmark = pytest.mark.timeout(300)

ATTACHMENT = {"attachment_id": "0" * 32, "name": "小票 receipt.jpg", "size": 84211}
EVERY_KIND = [
    ("text", {"text": "您好，在吗？ Hello 👋"}),
    ("rich", {"html": "<b>双11</b> <a href=\"https://shop.example/s\">sale</a>"}),
    ("emoji", {"emoji": "👍"}),
    ("image", {**ATTACHMENT, "mime": "image/jpeg"}),
    ("audio", {**ATTACHMENT, "mime": "audio/ogg"}),
    ("video", {**ATTACHMENT, "mime": "video/mp4"}),
    ("file", {**ATTACHMENT, "mime": "application/pdf"}),
    ("product", {"product_id": "42", "title": "电饭煲 Rice cooker 3L", "price": "299.00", "currency": "CNY"}),
    ("order", {"order_id": "TB2026111100042", "status": "shipped", "total": "598.00", "currency": "CNY",
               "items": [{"title": "电饭煲", "qty": 2}]}),
]


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("gw"), "pd-test-gw", "gw:")
    yield p
    p.stop()


def test_customer_and_agent_exchange_every_message_type(pd):
    async def main():
        async with connected(pd.url, pd.visitor_token()) as customer, \
                connected(pd.url, pd.owner_token, binary=True) as agent:
            await customer.send({"t": "open", "id": "o1", "group": "default"})
            session = (await customer.until("opened", id="o1"))["session"]
            await agent.send({"t": "subscribe", "session": session, "after": 0})
            await agent.until("resumed", session=session)
            for i, (kind, content) in enumerate(EVERY_KIND):
                sender, receiver = (customer, agent) if i % 2 == 0 else (agent, customer)
                await sender.send({"t": "msg", "cid": f"m{i}", "session": session, "kind": kind, "content": content})
                ack = await sender.until("ack", cid=f"m{i}")
                got = await receiver.until("msg", seq=ack["seq"])
                assert got["kind"] == kind and got["cid"] == f"m{i}"
                assert got["content"]["title" if kind in ("product",) else next(iter(content))] is not None
                expected = dict(content)
                if kind == "rich":
                    expected["html"] = '<b>双11</b> <a href="https://shop.example/s" rel="noopener noreferrer nofollow">sale</a>'
                assert got["content"] == expected, kind
            assert ack["seq"] == len(EVERY_KIND)
    trio.run(main)


def test_rich_text_is_sanitised_before_anyone_sees_it(pd):
    async def main():
        async with connected(pd.url, pd.visitor_token()) as customer:
            await customer.send({"t": "open", "id": "o"})
            session = (await customer.until("opened"))["session"]
            async with connected(pd.url, pd.owner_token) as agent:
                await agent.send({"t": "subscribe", "session": session})
                await agent.until("resumed")
                html = '<img src=x onerror="alert(1)"><script>steal()</script><a href="javascript:x()">hi</a><i>ok</i>'
                await customer.send({"t": "msg", "cid": "x", "session": session, "kind": "rich", "content": {"html": html}})
                got = await agent.until("msg")
                assert "script" not in got["content"]["html"] and "onerror" not in got["content"]["html"]
                assert "javascript" not in got["content"]["html"] and "<i>ok</i>" in got["content"]["html"]
    trio.run(main)


def test_a_dropped_customer_resumes_with_nothing_missing_and_nothing_twice(pd):
    async def main():
        token = pd.visitor_token()
        async with connected(pd.url, token) as customer:
            await customer.send({"t": "open", "id": "o"})
            session = (await customer.until("opened"))["session"]
            for i in range(3):
                await customer.send({"t": "msg", "cid": f"c{i}", "session": session, "kind": "text",
                                     "content": {"text": f"问题 {i}"}})
                last_seen = (await customer.until("ack", cid=f"c{i}"))["seq"]
        # the customer is gone; the agent answers meanwhile
        async with connected(pd.url, pd.owner_token) as agent:
            await agent.send({"t": "subscribe", "session": session, "after": 0})
            await agent.until("resumed")
            for i in range(4):
                await agent.send({"t": "msg", "cid": f"a{i}", "session": session, "kind": "text",
                                  "content": {"text": f"回答 {i}"}})
                await agent.until("ack", cid=f"a{i}")
        async with connected(pd.url, token, resume={session: last_seen}) as back:
            await back.until("resumed", session=session)
            replayed = [f for f in back.skipped if f["t"] == "msg"]
            assert [(f["seq"], f["content"]["text"]) for f in replayed] == [(4 + i, f"回答 {i}") for i in range(4)]
            # and a message sent again with an old cid (its ack was lost) is not a new message
            await back.send({"t": "msg", "cid": "c2", "session": session, "kind": "text", "content": {"text": "问题 2"}})
            assert (await back.until("ack", cid="c2"))["seq"] == 3
    trio.run(main)


def test_another_customers_or_merchants_session_is_unknown(pd):
    async def main():
        async with connected(pd.url, pd.visitor_token()) as alice:
            await alice.send({"t": "open", "id": "o"})
            session = (await alice.until("opened"))["session"]
            async with connected(pd.url, pd.visitor_token()) as mallory:
                for frame in ({"t": "subscribe", "session": session, "after": 0},
                              {"t": "msg", "cid": "steal", "session": session, "kind": "text", "content": {"text": "hi"}},
                              {"t": "read", "session": session, "seq": 1},
                              {"t": "typing", "session": session, "on": True}):
                    await mallory.send(frame)
                    error = await mallory.until("error")
                    assert error["code"] == "unknown_session", frame
            await alice.send({"t": "ping"})
            await alice.until("pong")
            assert not [f for f in alice.skipped if f["t"] in ("msg", "typing", "read")]
    trio.run(main)


def test_clients_told_goodbye_reconnect_and_lose_nothing(pd):
    import ray

    async def main():
        token = pd.visitor_token()
        async with connected(pd.url, token) as customer:
            await customer.send({"t": "open", "id": "o"})
            session = (await customer.until("opened"))["session"]
            await customer.send({"t": "msg", "cid": "before", "session": session, "kind": "text", "content": {"text": "1"}})
            seen = (await customer.until("ack", cid="before"))["seq"]
            await trio.to_thread.run_sync(lambda: ray.get(pd.cluster.gateways["gateway-0"].say_goodbye.remote("test")))
            bye = await customer.until("bye")
            assert bye["reconnect"] is True
            with trio.fail_after(10):
                try:
                    while True:
                        await customer.recv()
                except Exception as exc:  # the close that follows the bye
                    assert getattr(getattr(exc, "reason", None), "code", None) == 4000
        async with connected(pd.url, token, resume={session: seen}) as again:
            await again.until("resumed", session=session)
            await again.send({"t": "msg", "cid": "after", "session": session, "kind": "text", "content": {"text": "2"}})
            assert (await again.until("ack", cid="after"))["seq"] == seen + 1
    trio.run(main)


def test_typing_indicators_and_read_receipts_reach_the_other_side(pd):
    async def main():
        async with connected(pd.url, pd.visitor_token()) as customer, connected(pd.url, pd.owner_token) as agent:
            await customer.send({"t": "open", "id": "o"})
            session = (await customer.until("opened"))["session"]
            await agent.send({"t": "subscribe", "session": session})
            await agent.until("resumed")
            await customer.send({"t": "typing", "session": session, "on": True})
            typing = await agent.until("typing")
            assert typing["on"] is True and typing["from"]["kind"] == "visitor"
            await customer.send({"t": "msg", "cid": "q", "session": session, "kind": "text", "content": {"text": "hi"}})
            seq = (await agent.until("msg"))["seq"]
            await agent.send({"t": "read", "session": session, "seq": seq})
            read = await customer.until("read")
            assert read["seq"] == seq and read["from"]["kind"] == "agent"
            await agent.send({"t": "read", "session": session, "seq": seq + 5})  # not sent yet: refused
            error = await agent.until("error")
            assert error["code"] == "invalid_frame" and "seq" in error["message"]
    trio.run(main)


def test_every_websocket_action_of_merchant_a_against_merchant_bs_session_is_refused(pd):
    import asyncio

    import redis.asyncio as aioredis

    from gateway.auth import hash_password
    from storage.records import RecordStore

    async def make_shop_b():
        r = aioredis.from_url(pd.settings.redis_url)
        rs = RecordStore(r, pd.settings.prefix)
        await rs.create_merchant("shop-b", "B", None, actor="test")
        await rs.create_agent("shop-b", username="bowner", name="B", password_hash=hash_password("b password 123"),
                              role="owner", actor="test")
        await r.aclose()

    asyncio.run(make_shop_b())
    b_agent = pd.post("/api/v1/auth/login", {"merchant": "shop-b", "username": "bowner", "password": "b password 123"})

    async def main():
        async with connected(pd.url, pd.visitor_token("shop-b")) as b_customer, \
                connected(pd.url, b_agent["token"]) as b_owner:
            await b_customer.send({"t": "open", "id": "o"})
            session = (await b_customer.until("opened"))["session"]
            await b_customer.send({"t": "msg", "cid": "b1", "session": session, "kind": "text", "content": {"text": "B 的秘密"}})
            await b_customer.until("ack", cid="b1")
            b_id = b_owner.welcome["principal"]["id"]
            refusals = {"unknown_session", "forbidden", "invalid_frame"}
            for token in (pd.owner_token, pd.visitor_token("demo")):  # merchant A's owner and A's customer
                async with connected(pd.url, token) as a:
                    for frame in ({"t": "subscribe", "session": session, "after": 0},
                                  {"t": "msg", "cid": "a1", "session": session, "kind": "text", "content": {"text": "x"}},
                                  {"t": "typing", "session": session, "on": True},
                                  {"t": "read", "session": session, "seq": 1}):
                        await a.send(frame)
                        assert (await a.until("error"))["code"] == "unknown_session", frame
                    for frame in ({"t": "close", "session": session},
                                  {"t": "csat", "session": session, "score": 1},
                                  {"t": "transfer", "session": session, "to_agent": b_id},
                                  {"t": "transfer", "session": session, "to_group": "default"},
                                  {"t": "note", "cid": "n1", "session": session, "text": "x"},
                                  {"t": "pick", "session": session, "group": "default"},
                                  {"t": "takeover", "session": session},
                                  {"t": "chat", "cid": "c1", "to_agent": b_id, "text": "x"}):
                        await a.send(frame)
                        assert (await a.until("error"))["code"] in refusals, frame
                    assert not [f for f in a.skipped if f.get("t") in ("msg", "subscribed", "resumed", "assigned")]
            await b_owner.send({"t": "subscribe", "session": session, "after": 0})
            await b_owner.until("resumed")
            got = [f for f in b_owner.skipped if f["t"] == "msg"]
            assert [(f["seq"], f["cid"]) for f in got] == [(1, "b1")]  # B's conversation untouched
            state = [f for f in b_owner.skipped if f["t"] == "subscribed"][0]
            assert (state["status"], state["agent_id"]) == ("queued", "")  # not closed, moved or taken
            assert not [f for f in b_owner.skipped if f["t"] in ("chat", "assigned", "released")]
            await b_customer.send({"t": "ping"})
            await b_customer.until("pong")
            assert not [f for f in b_customer.skipped if f["t"] in ("msg", "typing", "read")]
    trio.run(main)
