"""Routing and collaboration end to end over real websockets, through the gateway, hosts and
queues on Ray with real Redis and chDB, using the project's Python client (gateway/client.py):
assignment, queue positions, freed capacity, close and CSAT, transfer, internal notes,
supervisor take-over."""
from __future__ import annotations

import time
import uuid

import pytest
import ray
import trio

from gateway.client import ClientError, connect
from tests.gateway_cluster import Peakdesk

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("routing"), "pd-test-routing", "rt:")
    yield p
    p.stop()


def group(pd: Peakdesk, **routing) -> str:
    gid = f"g{uuid.uuid4().hex[:8]}"
    pd.post("/api/v1/groups", {"group_id": gid, "name": gid, "routing": routing}, pd.owner_token)
    return gid


def agent(pd: Peakdesk, groups: list[str], max_concurrent: int = 5, role: str = "agent") -> tuple[str, str]:
    """A new agent of the demo merchant; returns (agent id, token)."""
    username = f"u{uuid.uuid4().hex[:10]}"
    record = pd.post("/api/v1/agents", {"username": username, "name": "小王 Wang", "password": "correct-horse-9",
                                        "role": role, "groups": groups, "max_concurrent": max_concurrent},
                     pd.owner_token)
    token = pd.post("/api/v1/auth/login", {"merchant": "demo", "username": username,
                                           "password": "correct-horse-9"})["token"]
    return record["agent_id"], token


async def online(client) -> dict:
    await client.set_status("online")
    return await client.until("agent", status="online")


def test_the_agent_learns_the_page_the_conversation_started_on_when_subscribing(pd):
    g = group(pd)
    _, token = agent(pd, [g])

    async def main():
        async with connect(pd.url, token) as a, connect(pd.url, pd.visitor_token()) as c:
            await online(a)
            entry = {"page": "https://shop.example/p/rc-3l", "product_id": "rc-3l"}
            session = await c.open(group=g, entry=entry)
            await a.until("assigned", session=session)
            await a.subscribe(session)
            assert (await a.until("subscribed", session=session))["entry"] == entry   # for the side panel
            await c.subscribe(session)
            assert "entry" not in await c.until("subscribed", session=session)        # the customer knows it
    trio.run(main)


def test_an_online_agent_gets_the_conversation_closes_it_and_the_customer_rates_it(pd):
    g = group(pd)
    agent_id, token = agent(pd, [g])

    async def main():
        async with connect(pd.url, token) as a, connect(pd.url, pd.visitor_token()) as c:
            await online(a)
            session = await c.open(group=g)
            got = await a.until("assigned", session=session)
            assert got["group"] == g
            assert (await c.until("event", event="session.assigned"))["agent_id"] == agent_id
            await a.subscribe(session)
            await c.send_message(session, "text", {"text": "我的快递到哪了？"})
            assert (await a.next_message(session))["content"]["text"] == "我的快递到哪了？"
            await a.close(session)
            assert (await c.until("event", event="session.closed"))["by"] == "agent"
            await c.until("event", event="csat.invite")
            assert (await a.until("released", session=session))["reason"] == "closed"
            await c.rate(session, 5, "很满意 great")
            assert (await c.until("event", event="csat.rated"))["score"] == 5
            await c.rate(session, 1)  # once only
            assert (await c.until("error", ref=session))["code"] == "invalid_state"
            return session
    session = trio.run(main)
    types = wait_for_events(pd, session, {"session.created", "session.assigned", "session.closed", "csat.invited",
                                          "csat.rated"})
    assert types >= {"session.created", "queue.entered", "session.assigned", "session.closed", "csat.rated"}


def wait_for_events(pd: Peakdesk, session: str, wanted: set[str], timeout: float = 30) -> set[str]:
    writer = next(iter(pd.cluster.writers.values()))
    deadline = time.monotonic() + timeout
    while True:
        rows = ray.get(writer.query.remote(
            "SELECT DISTINCT type FROM events WHERE merchant_id = 'demo' AND session_id = {s:String}", {"s": session}))
        types = {r[0] for r in rows}
        if wanted <= types or time.monotonic() > deadline:
            return types
        time.sleep(0.2)


def test_freed_capacity_goes_to_the_oldest_waiting_within_a_second_while_arrivals_continue(pd):
    g = group(pd)
    _, token = agent(pd, [g], max_concurrent=1)

    async def main():
        async with connect(pd.url, token) as a, trio.open_nursery() as nursery:
            await online(a)
            customers: list[tuple[str, object]] = []

            async def arrive():
                ready = trio.Event()

                async def customer(task_status=trio.TASK_STATUS_IGNORED):
                    async with connect(pd.url, pd.visitor_token()) as c:
                        session = await c.open(group=g)
                        # in the queue (or assigned) before the next one arrives: arrival order
                        # is the order the queue hears of them, not the order they opened
                        if customers:
                            await c.until("queue")
                        customers.append((session, c))
                        ready.set()
                        await trio.sleep_forever()
                nursery.start_soon(customer)
                await ready.wait()

            await arrive()
            current = (await a.until("assigned"))["session"]
            await arrive()
            await arrive()
            waits = []
            for round_ in range(5):
                await arrive()  # arrivals continue
                waiting = [(s, c) for s, c in customers if s != current and s not in served]
                oldest_session, oldest = waiting[0]
                t0 = time.perf_counter()
                await a.close(current)
                got = await a.until("assigned", timeout=5)
                await oldest.until("event", event="session.assigned", timeout=5)
                waits.append(time.perf_counter() - t0)
                assert got["session"] == oldest_session  # the oldest, not a later arrival
                served.add(current)
                current = got["session"]
            nursery.cancel_scope.cancel()
            return waits

    served: set[str] = set()
    waits = trio.run(main)
    print(f"freed capacity reused after (s): {[round(w, 3) for w in waits]}")
    assert max(waits) < 1.0, waits


def test_waiting_customers_hear_their_position_and_estimated_wait(pd):
    g = group(pd)

    async def main():
        async with connect(pd.url, pd.visitor_token()) as c1, connect(pd.url, pd.visitor_token()) as c2:
            s1 = await c1.open(group=g)
            q1 = await c1.until("queue", session=s1)  # in the queue before the next one opens
            s2 = await c2.open(group=g)
            q2 = await c2.until("queue", session=s2)
            assert (q1["position"], q2["position"]) == (1, 2)
            assert 0 <= q1["eta_s"] <= q2["eta_s"]
            await c1.close(s1)  # the first one leaves: the second moves up
            assert (await c2.until("queue", session=s2))["position"] == 1
    trio.run(main)


def test_transfer_to_an_agent_with_a_note_the_customer_never_sees(pd):
    g1, g2 = group(pd), group(pd)
    a1_id, a1_token = agent(pd, [g1])
    a2_id, a2_token = agent(pd, [g2])

    async def main():
        async with connect(pd.url, a1_token) as a1, connect(pd.url, a2_token) as a2, \
                connect(pd.url, pd.visitor_token()) as c:
            await online(a1)
            await online(a2)
            session = await c.open(group=g1)
            await a1.until("assigned", session=session)
            await a1.subscribe(session)
            await a1.transfer(session, to_agent=a2_id, note="老客户，退款问题 refund, VIP")
            got = await a2.until("assigned", session=session)
            assert got["via"] == "transfer"
            assert (await a1.until("released", session=session))["reason"] == "transfer"
            assert (await c.until("event", event="session.transferred"))["agent_id"] == a2_id
            await a2.subscribe(session, after=0)
            note = await a2.next_message(session)
            assert note["internal"] and note["content"]["text"] == "老客户，退款问题 refund, VIP"
            await c.send_message(session, "text", {"text": "还在吗"})
            assert (await a2.next_message(session))["content"]["text"] == "还在吗"
            with pytest.raises(ClientError) as refused:  # the old agent no longer has access
                await a1.send_message(session, "text", {"text": "hi"}, timeout=5)
            assert refused.value.code == "unknown_session"
            # back to a group's queue: a1's group
            await a2.transfer(session, to_group=g1)
            assert (await a1.until("assigned", session=session))["via"] == "queue"
            assert [f for f in c.passed if f.get("internal")] == []
    trio.run(main)


def test_internal_notes_reach_agents_only_even_on_resume(pd):
    g = group(pd)
    _, token = agent(pd, [g])

    async def main():
        visitor = pd.visitor_token()
        async with connect(pd.url, token) as a:
            await online(a)
            async with connect(pd.url, visitor) as c:
                session = await c.open(group=g)
                await a.until("assigned", session=session)
                await a.subscribe(session)
                await c.send_message(session, "text", {"text": "hello"})
                note_seq = await a.note(session, "客户很着急 — call back")
                seq = await a.send_message(session, "text", {"text": "您好"})
                assert seq == note_seq + 1
                got = await c.next_message(session)
                assert got["seq"] == seq and got["content"]["text"] == "您好"  # the note was skipped
                assert not [f for f in c.passed if f.get("t") == "msg" and f.get("internal")]
            async with connect(pd.url, visitor, resume={session: 0}) as again:
                texts = []
                with trio.move_on_after(2):
                    while True:
                        texts.append((await again.next_message(session))["content"].get("text"))
                assert texts == ["hello", "您好"]
            async with connect(pd.url, pd.owner_token) as supervisor:
                await supervisor.subscribe(session, after=0)
                seen = [await supervisor.next_message(session) for _ in range(3)]
                assert [f.get("internal", False) for f in seen] == [False, True, False]
            async with connect(pd.url, visitor) as c2:  # customers may not write notes
                await c2.send({"t": "note", "cid": "n1", "session": session, "text": "x"})
                assert (await c2.until("error"))["code"] == "forbidden"
    trio.run(main)


def test_a_supervisor_watches_live_and_takes_over(pd):
    g = group(pd)
    a_id, a_token = agent(pd, [g])
    sup_id, sup_token = agent(pd, [], role="supervisor")

    async def main():
        async with connect(pd.url, a_token) as a, connect(pd.url, sup_token) as sup, \
                connect(pd.url, pd.visitor_token()) as c:
            await online(a)
            session = await c.open(group=g)
            await a.until("assigned", session=session)
            await sup.subscribe(session)  # watching live
            await c.send_message(session, "text", {"text": "我要投诉 complaint"})
            assert (await sup.next_message(session))["content"]["text"] == "我要投诉 complaint"
            await a.takeover(session)  # an agent may not
            assert (await a.until("error", ref=session))["code"] == "forbidden"
            await sup.takeover(session)
            assert (await sup.until("assigned", session=session))["via"] == "takeover"
            assert (await a.until("released", session=session))["reason"] == "takeover"
            assert (await c.until("event", event="session.taken_over"))["agent_id"] == sup_id
            await sup.send_message(session, "text", {"text": "我是主管，马上为您处理"})
            assert (await c.next_message(session))["content"]["text"] == "我是主管，马上为您处理"
    trio.run(main)


def signed_customer(pd: Peakdesk, customer_id: str, attributes: dict) -> str:
    """A customer the merchant's site signed in, with attributes its back end pushed."""
    from gateway.auth import customer_signature

    pd.request("PATCH", f"/api/v1/customers/{customer_id}/attributes", {"attributes": attributes}, pd.owner_token)
    secret = pd.post("/api/v1/merchant/customer-secret", {}, pd.owner_token)["customer_secret"]
    ts = int(time.time())
    return pd.post("/api/v1/auth/customer", {"merchant": "demo", "customer_id": customer_id, "ts": ts,
                                             "signature": customer_signature(secret, "demo", customer_id, ts)})["token"]


def test_diversion_rules_send_vip_and_refund_customers_to_their_groups(pd):
    vip, refunds, default = group(pd), group(pd), group(pd)
    pd.request("PATCH", "/api/v1/merchant", {"settings": {"diversion": [
        {"name": "VIP desk", "when": {"attr.vip_tier": {"gte": 2}}, "group": vip, "priority": 1},
        {"when": {"issue_type": {"in": ["refund", "退款"]}}, "group": refunds}]}}, pd.owner_token)
    bad = pd.request("PATCH", "/api/v1/merchant", {"settings": {"diversion": [{"group": "nope-no-group"}]}},
                     pd.owner_token, expect=422)
    assert bad["field"] == "settings.diversion[0].group" and bad["error"] == "invalid_field"
    vip_token = signed_customer(pd, f"vip-{uuid.uuid4().hex[:6]}", {"vip_tier": 3, "等级": "金卡"})

    async def main():
        async with connect(pd.url, vip_token) as c1, connect(pd.url, pd.visitor_token()) as c2, \
                connect(pd.url, pd.visitor_token()) as c3:
            s1 = await c1.open(group=default)
            s2 = await c2.open(group=default, issue_type="退款")
            s3 = await c3.open(group=default)
            return [(await c.until("queue", session=s))["session"] for c, s in ((c1, s1), (c2, s2), (c3, s3))]
    try:
        sessions = trio.run(main)
    finally:
        pd.request("PATCH", "/api/v1/merchant", {"settings": {"diversion": []}}, pd.owner_token)
    writer = next(iter(pd.cluster.writers.values()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = ray.get(writer.query.remote(
            "SELECT session_id, group_id, JSONExtractInt(payload, 'priority') FROM events "
            "WHERE type = 'session.created' AND session_id IN {s:Array(String)}", {"s": sessions}))
        if len(rows) == 3:
            break
        time.sleep(0.2)
    got = {r[0]: (r[1], r[2]) for r in rows}
    assert [got[s] for s in sessions] == [(vip, 3), (refunds, 0), (default, 0)]  # VIP tier 3 outranks the rule's 1


def test_outside_business_hours_nobody_queues_and_the_customer_leaves_a_message(pd):
    g = group(pd)
    _, token = agent(pd, [g])
    import datetime as dt
    from zoneinfo import ZoneInfo
    far = (dt.datetime.now(ZoneInfo("Asia/Shanghai")).hour + 12) % 24  # half a day away from now
    nobody_home = {"timezone": "Asia/Shanghai", "days": {d: [{"start": f"{far:02d}:00", "end": f"{far:02d}:30"}]
                                                           for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}}
    pd.request("PATCH", "/api/v1/merchant", {"settings": {"business_hours": nobody_home,
                                                          "offline_message": "下班了，请留言 — leave a message"}},
               pd.owner_token)

    async def main():
        async with connect(pd.url, token) as a, connect(pd.url, pd.visitor_token()) as c:
            await online(a)
            nonlocal session
            session = await c.open(group=g)
            told = await c.until("event", event="outside_hours")
            assert told["message"] == "下班了，请留言 — leave a message"
            seq = await c.send_message(session, "text", {"text": "我的订单 TB123 没发货，请回电"})
            assert seq == 1
            with trio.move_on_after(1.5):
                frame = await a.until("assigned")
                raise AssertionError(f"assigned outside business hours: {frame}")
        async with connect(pd.url, pd.owner_token) as supervisor:  # the message stays with the conversation
            await supervisor.subscribe(session, after=0)
            assert (await supervisor.next_message(session))["content"]["text"] == "我的订单 TB123 没发货，请回电"
    session = ""
    try:
        trio.run(main)
    finally:
        pd.request("PATCH", "/api/v1/merchant", {"settings": {"business_hours": None}}, pd.owner_token)


def test_overflow_starts_and_stops_at_the_queue_threshold(pd):
    spill = group(pd)
    busy = group(pd, overflow_group=spill, overflow_max_waiting=2)
    _, token = agent(pd, [spill])

    async def main():
        async with connect(pd.url, token) as a, trio.open_nursery() as nursery:
            await online(a)
            clients = []
            for _ in range(4):
                c = await nursery.start(_customer, pd)
                clients.append((await c.open(group=busy), c))
                await trio.sleep(0.3)  # in order
            # the first three wait in `busy`; the fourth finds more than 2 waiting and spills over
            got = await a.until("assigned")
            assert got["session"] == clients[3][0] and got["group"] == spill
            await clients[0][1].close(clients[0][0])
            await clients[1][1].close(clients[1][0])  # back to 1 waiting: overflow stops
            await trio.sleep(0.5)
            c = await nursery.start(_customer, pd)
            s = await c.open(group=busy)
            assert (await c.until("queue", session=s))["position"] == 2  # behind the third, in `busy`
            nursery.cancel_scope.cancel()
    trio.run(main)


async def _customer(pd, task_status=trio.TASK_STATUS_IGNORED):
    async with connect(pd.url, pd.visitor_token()) as c:
        task_status.started(c)
        await trio.sleep_forever()


def test_agents_chat_privately_and_in_their_group(pd):
    g = group(pd)
    a_id, a_token = agent(pd, [g])
    b_id, b_token = agent(pd, [g])
    c_id, c_token = agent(pd, [])

    async def main():
        async with connect(pd.url, a_token) as a, connect(pd.url, b_token) as b, connect(pd.url, c_token) as c:
            seq = await a.chat("帮我看下 TB123 的退款？", to_agent=b_id)
            got = await b.until("chat")
            assert (got["seq"], got["text"], got["from"]["id"]) == (seq, "帮我看下 TB123 的退款？", a_id)
            assert got["room"] == "dm." + ".".join(sorted([a_id, b_id]))
            await b.chat("好的 on it", to_agent=a_id, cid="r1")
            assert (await a.until("chat", cid="r1"))["text"] == "好的 on it"
            assert await b.chat("好的 on it", to_agent=a_id, cid="r1") == seq + 1  # re-sent: same message
            await a.chat("双11 准备好了吗 ready?", group=g)
            assert (await b.until("chat", room=f"grp.{g}"))["text"] == "双11 准备好了吗 ready?"
            with pytest.raises(ClientError) as refused:  # c is not in the group
                await c.chat("hi", group=g)
            assert refused.value.code == "forbidden"
            with trio.move_on_after(1):
                frame = await c.until("chat")
                raise AssertionError(f"an outsider saw {frame}")
        async with connect(pd.url, pd.visitor_token()) as customer:
            with pytest.raises(ClientError) as refused:
                await customer.chat("hi", to_agent=a_id)
            assert refused.value.code == "forbidden"
    trio.run(main)


def test_agents_online_and_their_load_are_visible_in_redis_presence(pd):
    import asyncio

    import redis.asyncio as aioredis

    from storage.presence import Presence

    g = group(pd)
    agent_id, token = agent(pd, [g], max_concurrent=3)

    async def seen() -> dict | None:
        r = aioredis.from_url(pd.settings.redis_url)
        try:
            return await Presence(r, pd.settings.prefix).get_agent("demo", agent_id)
        finally:
            await r.aclose()

    async def until(want: dict) -> dict | None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            got = await trio.to_thread.run_sync(lambda: asyncio.run(seen()))
            if got and all(got[k] == v for k, v in want.items()):
                return got
            await trio.sleep(0.3)
        return got

    async def main():
        async with connect(pd.url, token) as a, connect(pd.url, pd.visitor_token()) as c:
            await online(a)
            assert await until({"status": "online", "capacity": 3, "load": 0})
            session = await c.open(group=g)
            await a.until("assigned", session=session)
            assert await until({"status": "online", "load": 1})
            await a.set_status("away")
            assert await until({"status": "away"})
    trio.run(main)


def test_a_returning_customer_gets_the_agent_who_served_them_even_if_busier(pd):
    g = group(pd, strategy="returning_customer", returning_within_days=7)
    p_id, p_token = agent(pd, [g], max_concurrent=2)
    q_id, q_token = agent(pd, [g], max_concurrent=10)
    returning = signed_customer(pd, f"ret-{uuid.uuid4().hex[:6]}", {"vip_tier": 0})

    async def main():
        async with connect(pd.url, p_token) as p, connect(pd.url, q_token) as q:
            await online(p)
            async with connect(pd.url, returning) as c:
                first = await c.open(group=g)
                await p.until("assigned", session=first)
                await c.close(first)
                await p.until("released", session=first)
            async with connect(pd.url, pd.visitor_token()) as other:
                s = await other.open(group=g)
                await p.until("assigned", session=s)  # p now holds one of two places (load 0.5)
                await online(q)                       # q: 0 of 10 — least load would pick q
                async with connect(pd.url, returning) as c:
                    again = await c.open(group=g)
                    got = await p.until("assigned", session=again)
                    assert got["customer_id"] == c.principal["id"]
                    with trio.move_on_after(1):
                        frame = await q.until("assigned")
                        raise AssertionError(f"q was given {frame}")
    trio.run(main)


def test_a_reopened_conversation_returns_to_its_agent_only_if_they_have_room(pd):
    g = group(pd)
    a_id, token = agent(pd, [g], max_concurrent=1)

    async def main():
        async with connect(pd.url, token) as a, connect(pd.url, pd.visitor_token()) as c:
            await online(a)
            session = await c.open(group=g)
            await a.until("assigned", session=session)
            await c.close(session)
            await a.until("released", session=session)
            await c.send_message(session, "text", {"text": "还有一个问题 one more thing"})  # reopens
            got = await a.until("assigned", session=session)
            assert got["via"] == "reopen"
            assert (await c.until("event", event="session.reopened"))["session"] == session
            await a.close(session)
            await a.until("released", session=session)
            await a.set_status("away")
            await a.until("agent", status="away")
            await c.send_message(session, "text", {"text": "在吗？"})  # the agent is away: it queues
            assert (await c.until("queue", session=session))["position"] == 1
            await a.set_status("online")
            assert (await a.until("assigned", session=session))["via"] == "queue"
    trio.run(main)
