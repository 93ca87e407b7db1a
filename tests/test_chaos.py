"""The chaos suite (`python -m bench.chaos --short`, in a process of its own): a surge of
conversations over real websockets while a gateway, an actor host, the writer, Redis, the chDB
owner and a whole Ray worker node are killed in turn — no fault may lose or repeat a message,
and every outbox must drain into ClickHouse with exactly the run's events. Correctness only:
no assertion about time.

And the faults it found, each shown on its own, deterministically:
- a host that dies between committing a message and pushing it leaves a connected recipient
  waiting forever (pushes are at most once): the restarted host has its gateways renew what
  their connections follow;
- after Redis restarts, every connection idle in a gateway's redis-py pool failed its next
  command (REST 500s, dropped websockets) however long after.
(The third — a host pinned to a Ray node that is removed without a drain was never restarted —
needs two Ray nodes: the suite's `node` fault shows it.)
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from actors.envelope import ActorRef, Envelope
from storage.redis_server import free_port, start_redis
from tests.gateway_cluster import Peakdesk, connected

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ["gateway", "host", "writer", "redis", "chdb", "node"]


@pytest.mark.timeout(900)
def test_the_short_chaos_suite_loses_and_repeats_nothing_and_every_outbox_drains(tmp_path):
    out = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, "-m", "bench.chaos", "--short", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=840,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    print(done.stdout[-5000:])
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    phases = {p["fault"]: p for p in report["faults"]}
    assert sorted(phases) == sorted(FAULTS), report["stages"]
    for fault, p in phases.items():
        assert p["kill_after_s"] is not None, (fault, p["injected"])            # the fault happened
        assert p["conversations"] > 0 and p["acked"] > 0, (fault, p)            # under real traffic
        assert p["lost"] == 0 and p["duplicated"] == 0, (fault, p["lost_detail"])
        assert p["outbox_drained"], (fault, p["outbox"], p["events"])            # backlog 0, CH == the run
        assert p["events"]["copies"] == 0 and not p["events"]["differences"], (fault, p["events"])
    assert done.returncode == 0, done.stdout[-3000:]
    assert report["ok"]


# -- a lost push, repaired by the host's restart --------------------------------------------------
@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("chaos"), "pd-test-chaos", "chaos:", port=free_port())
    yield p
    p.stop()


def _send_from_here(pd: Peakdesk, envs: list[Envelope]) -> None:
    """Envelopes from this process, as another host would send them."""
    from actors.router import Router
    from actors.transport import RayTransport

    asyncio.run(Router("test-chaos", RayTransport(pd.settings.namespace), pd.cluster.table()).send(envs))


def test_a_message_whose_push_was_lost_reaches_the_connected_agent_once_its_host_restarts(pd):
    import ray

    async def main():
        token = pd.visitor_token()
        async with connected(pd.url, token) as customer, connected(pd.url, pd.owner_token) as agent:
            await customer.send({"t": "open", "id": "o"})
            session = (await customer.until("opened"))["session"]
            await agent.send({"t": "subscribe", "session": session, "after": 0})
            await agent.until("resumed", session=session)
            ref = ActorRef("session", "demo", session)
            # The push to the agent goes missing, as when the host dies between the commit and
            # the push: the conversation forgets the agent's connection, which still follows it.
            await trio.to_thread.run_sync(_send_from_here, pd, [Envelope(ref, "unsubscribe", {
                "connection": f"gateway-0/{agent.welcome['conn']}"})])
            await customer.send({"t": "msg", "cid": "c1", "session": session, "kind": "text",
                                 "content": {"text": "在吗 anyone?"}})
            assert (await customer.until("ack", cid="c1"))["seq"] == 1
            with pytest.raises(trio.TooSlowError):
                await agent.until("msg", timeout=1.5)                 # acknowledged, not delivered
            owner = pd.cluster.table().owner(ref)
            pid = await trio.to_thread.run_sync(lambda: ray.get(pd.cluster.hosts[owner].pid.remote()))
            os.kill(pid, signal.SIGKILL)
            got = await agent.until("msg", timeout=60)                  # its host came back: renewed
            assert (got["session"], got["seq"], got["cid"]) == (session, 1, "c1")
            with pytest.raises(trio.TooSlowError):
                await agent.until("msg", timeout=1.5)                 # once
    trio.run(main)


# -- a gateway's Redis connections after Redis restarted -----------------------------------------
def test_the_gateways_redis_connections_survive_a_redis_restart(tmp_path):
    from gateway.service import redis_client

    server = start_redis(tmp_path / "redis")

    async def main():
        r = redis_client(server.url)
        try:
            await asyncio.gather(*(r.set(f"k{i}", i) for i in range(16)))   # 16 connections in the pool
            server.kill()
            time.sleep(0.5)
            server.start()           # same port, same data dir: the AOF brings the keys back
            await asyncio.sleep(1.0)
            got = await asyncio.gather(*(r.get(f"k{i}") for i in range(32)), return_exceptions=True)
        finally:
            await r.aclose()
        assert got[:16] == [str(i).encode() for i in range(16)] and got[16:] == [None] * 16
    try:
        asyncio.run(main())
    finally:
        server.stop()
