"""The gateway's Ray actor killed mid-conversation: clients reconnect to its restarted
incarnation, resume, re-send what was not acknowledged — nothing acknowledged is lost and
nothing appears twice."""
from __future__ import annotations

import os
import signal

import pytest
import trio
import trio_websocket

from storage.redis_server import free_port
from tests.gateway_cluster import Peakdesk, connected

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("gwc"), "pd-test-gwc", "gwc:", port=free_port())
    yield p
    p.stop()


async def until_closed(client) -> None:
    with trio.fail_after(20):
        try:
            while True:
                await client.recv()
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            return


async def resume_and_resend(pd, token: str, session: str, agent_seen: int) -> list[tuple[int, str]]:
    """The customer resumes and re-sends its unacknowledged message; returns what the agent,
    resuming from what it had seen, receives."""
    async with connected(pd.url, token, resume={session: 10}) as customer, \
            connected(pd.url, pd.owner_token, resume={session: agent_seen}) as agent:
        await customer.until("resumed", session=session)
        await customer.send({"t": "msg", "cid": "c10", "session": session, "kind": "text", "content": {"text": "最后"}})
        assert (await customer.until("ack", cid="c10"))["seq"] == 11
        await agent.until("resumed", session=session)
        seen = [f for f in agent.skipped if f["t"] == "msg"] or [await agent.until("msg")]
        try:
            seen.append(await agent.until("msg", timeout=1))  # nothing more may come
        except trio.TooSlowError:
            pass
        return [(f["seq"], f["cid"]) for f in seen]


def test_killing_the_gateway_loses_nothing_acknowledged_and_shows_nothing_twice(pd):
    import ray

    async def main():
        token = pd.visitor_token()
        gateway = pd.cluster.gateways["gateway-0"]
        victim = await trio.to_thread.run_sync(lambda: ray.get(gateway.pid.remote()))
        async with connected(pd.url, token) as customer, connected(pd.url, pd.owner_token) as agent:
            await customer.send({"t": "open", "id": "o"})
            session = (await customer.until("opened"))["session"]
            await agent.send({"t": "subscribe", "session": session, "after": 0})
            await agent.until("resumed")
            for i in range(10):
                await customer.send({"t": "msg", "cid": f"c{i}", "session": session, "kind": "text",
                                     "content": {"text": f"第{i}条"}})
                await customer.until("ack", cid=f"c{i}")
            agent_seen = max(f["seq"] for f in [await agent.until("msg", seq=10)] + agent.skipped if f["t"] == "msg")
            # one more, unacknowledged when the gateway dies
            await customer.send({"t": "msg", "cid": "c10", "session": session, "kind": "text", "content": {"text": "最后"}})
            os.kill(victim, signal.SIGKILL)
            await until_closed(customer)
            await until_closed(agent)
        deadline = trio.current_time() + 60
        while True:  # reconnect as a client does: retry until the restarted gateway answers
            try:
                with trio.fail_after(8):
                    seen = await resume_and_resend(pd, token, session, agent_seen)
                break
            except (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, trio.TooSlowError):
                assert trio.current_time() < deadline, "the gateway did not come back"
                await trio.sleep(0.3)
        assert seen == [(11, "c10")]
        assert await trio.to_thread.run_sync(lambda: ray.get(gateway.pid.remote())) != victim
    trio.run(main)
