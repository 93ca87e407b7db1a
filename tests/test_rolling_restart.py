"""A rolling restart (`peakdesk restart --rolling`: the gateway, each actor host, the writer,
one at a time) while a customer and a supervisor hold a conversation: both reconnect and resume by
sequence number, the customer re-sends what was not acknowledged under the same cid — every
message reaches the other side once, and ClickHouse holds each message event once."""
from __future__ import annotations

import threading
import time

import pytest
import trio
import trio_websocket

from actors import scaling
from storage.redis_server import free_port
from tests.gateway_cluster import Peakdesk, connected

pytestmark = pytest.mark.timeout(300)
MESSAGES = 60
DROPPED = (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, trio.BrokenResourceError,
           trio.TooSlowError, OSError)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("roll"), "pd-test-roll", "roll:", port=free_port())
    yield p
    p.stop()


async def customer(pd: Peakdesk, token: str, state: dict) -> None:
    """Sends MESSAGES messages one at a time; after any disconnect, reconnects (the gateway
    may be restarting) and re-sends the unacknowledged one with the same cid."""
    n = 0
    while n < MESSAGES:
        try:
            async with connected(pd.url, token, resume={state["session"]: state["customer_seq"]}) as c:
                state["customer_connects"] += 1
                while n < MESSAGES:
                    cid = f"m{n}"
                    await c.send({"t": "msg", "cid": cid, "session": state["session"], "kind": "text",
                                  "content": {"text": f"第{n}条 message {n}"}})
                    ack = await c.until("ack", cid=cid, timeout=8)
                    state["acks"][cid] = ack["seq"]
                    state["customer_seq"] = max(state["customer_seq"], ack["seq"])
                    n += 1
                    if n == 10:
                        state["restart"].set()   # the restart starts while the conversation runs
                    await trio.sleep(0.15)
        except DROPPED:
            await trio.sleep(0.3)


async def supervisor(pd: Peakdesk, state: dict) -> None:
    """Watches the conversation, resuming from the last sequence it saw after any disconnect."""
    while len({f for f in state["seen"].values()}) < MESSAGES:
        try:
            async with connected(pd.url, pd.owner_token, resume={state["session"]: state["agent_seq"]}) as a:
                state["agent_connects"] += 1
                while len(state["seen"]) < MESSAGES:
                    frame = await a.recv(timeout=15)
                    if frame.get("t") == "msg" and frame.get("session") == state["session"]:
                        state["deliveries"].append(frame["seq"])
                        state["seen"][frame["seq"]] = frame["cid"]
                        state["agent_seq"] = max(state["agent_seq"], frame["seq"])
        except DROPPED:
            await trio.sleep(0.3)


def test_a_rolling_restart_under_a_running_conversation_loses_and_repeats_nothing(pd):
    token = pd.visitor_token()
    state = {"acks": {}, "seen": {}, "deliveries": [], "customer_seq": 0, "agent_seq": 0, "customer_connects": 0,
             "agent_connects": 0, "restart": threading.Event()}

    async def open_session():
        async with connected(pd.url, token) as c:
            await c.send({"t": "open", "id": "o1"})
            return (await c.until("opened", id="o1"))["session"]
    state["session"] = trio.run(open_session)
    restarted: dict = {}

    def restart():
        state["restart"].wait(timeout=60)
        t0 = time.monotonic()
        restarted.update(scaling.restart_rolling(pd.cluster))
        restarted["seconds"] = round(time.monotonic() - t0, 1)
    thread = threading.Thread(target=restart)
    thread.start()

    async def main():
        with trio.fail_after(180):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(supervisor, pd, state)
                await customer(pd, token, state)
                with trio.fail_after(60):
                    while len(state["seen"]) < MESSAGES:
                        await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
    trio.run(main)
    thread.join(timeout=120)
    print(f"rolling restart: {restarted}; customer connects {state['customer_connects']}, "
          f"supervisor connects {state['agent_connects']}")
    assert restarted["restarted"] == ["gateway-0", "host-0", "host-1", "writer-0"]
    assert state["customer_connects"] >= 2 and state["agent_connects"] >= 2     # the gateway did go away
    assert sorted(state["acks"]) == sorted(f"m{n}" for n in range(MESSAGES))
    assert len(set(state["acks"].values())) == MESSAGES                          # one sequence number each
    assert sorted(state["seen"].values(), key=lambda c: int(c[1:])) == [f"m{n}" for n in range(MESSAGES)]
    assert len(state["deliveries"]) == len(set(state["deliveries"])) == MESSAGES  # the supervisor saw each once
    assert {seq: cid for cid, seq in state["acks"].items()} == state["seen"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts = pd.post("/api/v1/events/count", {"sessions": [state["session"]]}, pd.owner_token)
        if counts["counts"].get("message.sent", 0) >= MESSAGES:
            break
        time.sleep(0.3)
    assert counts["counts"]["message.sent"] == MESSAGES and counts["copies"] == 0
