"""The runtime on real Ray processes, real Redis and real chDB: exactly once and in order
across hosts, a host killed mid-stream, draining with state. Events are checked where they
end up: in ClickHouse, queried through the writer (the chDB owner)."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import orjson
import pytest

from actors.cluster import Cluster
from actors.envelope import ActorRef, Envelope
from actors.router import Router
from actors.settings import Settings
from actors.transport import RayTransport
from tests.storage_helpers import opened_payload

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster(ray_session, redis_server, tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("rt"), redis_url=redis_server.url, hosts=2,
                        prefix="rt:", namespace="pd-test-rt")
    c = Cluster(settings)
    c.start(gateway=False)
    yield c
    c.stop()


def router(cluster: Cluster, name: str = "test") -> Router:
    return Router(name, RayTransport(cluster.settings.namespace), cluster.table())


async def send_all(r: Router, envs: list[Envelope], batch: int = 250, window: int = 16) -> None:
    sem = asyncio.Semaphore(window)

    async def one(chunk):
        async with sem:
            await r.send(chunk)

    await asyncio.gather(*(one(envs[i:i + batch]) for i in range(0, len(envs), batch)))


def rows(cluster: Cluster, sql: str, **params) -> list[tuple]:
    import ray

    writer = cluster.writers["writer-0"]
    return ray.get(writer.query.remote(sql, params))


def wait_for_rows(cluster: Cluster, merchant: str, want: int, timeout: float = 90) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = rows(cluster, "SELECT count() FROM events WHERE merchant_id = {m:String} AND type = 'message.sent'",
                 m=merchant)[0][0]
        if n >= want or time.monotonic() > deadline:
            return n
        time.sleep(0.2)


def assert_each_session_got(cluster: Cluster, merchant: str, sessions: int, per_session: int) -> None:
    got = rows(cluster, "SELECT session_id, seq, payload, event_id FROM events "
                        "WHERE merchant_id = {m:String} AND type = 'message.sent'", m=merchant)
    assert len(got) == sessions * per_session
    assert len({r[3] for r in got}) == len(got), "an event is stored twice"
    by_session: dict[str, list[tuple[int, int]]] = {}
    for sid, seq, payload, _ in got:
        n = opened_payload(cluster.settings.redis_url, cluster.settings.prefix, merchant, payload)["n"]
        by_session.setdefault(sid, []).append((seq, n))
    assert len(by_session) == sessions
    for sid, pairs in by_session.items():
        assert [n for _, n in sorted(pairs)] == list(range(per_session)), sid


def test_ten_thousand_envelopes_to_a_thousand_sessions_once_and_in_order(cluster):
    sessions = [ActorRef("session", "m-order", f"s{i}") for i in range(1000)]
    envs = [Envelope(s, "message", {"n": k, "text": "请问什么时候发货 when do you ship"})
            for k in range(10) for s in sessions]
    asyncio.run(send_all(router(cluster), envs))
    stats = cluster.statistics()
    assert all(s["activations"] >= 300 for s in stats.values()), stats  # spread over both hosts
    assert wait_for_rows(cluster, "m-order", 10_000) == 10_000
    assert_each_session_got(cluster, "m-order", 1000, 10)


def test_a_host_killed_mid_stream_loses_nothing_acknowledged_and_duplicates_nothing(cluster):
    sessions = [ActorRef("session", "m-kill", f"s{i}") for i in range(200)]
    envs = [Envelope(s, "message", {"n": k}) for k in range(20) for s in sessions]
    victim = cluster.host_pids()["host-0"]

    async def main():
        r = router(cluster)
        sending = asyncio.create_task(send_all(r, envs, batch=50, window=4))
        while r.channel("host-0").sent_batches < 10:  # mid-stream: traffic is flowing
            await asyncio.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        await sending  # every batch is acknowledged in the end: re-sent to the restarted host
        return r.channel("host-0").retries

    retries = asyncio.run(main())
    assert retries > 0  # the kill hit batches in flight
    assert cluster.host_pids()["host-0"] != victim  # Ray restarted it
    assert wait_for_rows(cluster, "m-kill", 4000) == 4000
    assert_each_session_got(cluster, "m-kill", 200, 20)


def test_draining_a_host_moves_its_actors_with_their_state_while_traffic_flows(cluster):
    import ray

    sessions = [ActorRef("session", "m-drain", f"s{i}") for i in range(100)]
    asyncio.run(send_all(router(cluster), [Envelope(s, "message", {"n": 0}) for s in sessions]))
    before = cluster.statistics()["host-0"]["activations"]
    assert before > 0

    async def drain_under_traffic() -> int:
        r = router(cluster, "during")  # keeps the old table: host-0 must forward what it gets
        draining = asyncio.create_task(asyncio.to_thread(cluster.drain, "host-0"))
        for k in range(1, 11):
            await send_all(r, [Envelope(s, "message", {"n": k}) for s in sessions])
        return await draining

    moved = asyncio.run(drain_under_traffic())
    assert moved == before
    assert cluster.statistics()["host-0"]["activations"] == 0
    asyncio.run(send_all(router(cluster, "after"), [Envelope(s, "message", {"n": 11}) for s in sessions]))
    host1 = cluster.hosts["host-1"]
    states = ray.get([host1.actor_state.remote(s.key) for s in sessions])
    assert all(st is not None and st["state"]["messages"] == 12 for st in states)
    assert cluster.statistics()["host-0"]["activations"] == 0
    assert wait_for_rows(cluster, "m-drain", 1200) == 1200
    assert_each_session_got(cluster, "m-drain", 100, 12)
