"""ClickHouse down for a while under a running cluster: conversations go on (nothing waits for
ClickHouse), events wait in the Redis outbox, `peakdesk status` shows the backlog, and every
event arrives exactly once when ClickHouse is back. ClickHouse here is the HTTP test shim over
chDB, the same client path a production ClickHouse server takes."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from actors.cluster import Cluster
from actors.envelope import ActorRef, Envelope
from actors.router import Router
from actors.settings import Settings
from actors.status import collect
from actors.transport import RayTransport

pytestmark = pytest.mark.timeout(240)


def count(cluster: Cluster) -> tuple[int, int]:
    import ray

    sql = "SELECT count(), uniqExact(event_id) FROM events WHERE merchant_id = 'm-outage' AND type = 'message.sent'"
    return tuple(ray.get(cluster.writers["writer-0"].query.remote(sql))[0])


def wait_count(cluster: Cluster, want: int, timeout: float = 90) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while (got := count(cluster))[0] < want and time.monotonic() < deadline:
        time.sleep(0.25)
    return got


def test_events_wait_in_the_outbox_while_clickhouse_is_down(ray_session, redis_server, clickhouse_shim, tmp_path):
    settings = Settings(data_dir=tmp_path, redis_url=redis_server.url, clickhouse_url=clickhouse_shim.dsn,
                        hosts=1, prefix="ch:", namespace="pd-test-ch", database=f"t_{uuid.uuid4().hex[:10]}")
    cluster = Cluster(settings)
    cluster.start(gateway=False)
    try:
        r = Router("test", RayTransport(settings.namespace), cluster.table())
        sessions = [ActorRef("session", "m-outage", f"s{i}") for i in range(50)]

        def messages(k: int) -> list[Envelope]:
            return [Envelope(s, "message", {"n": k}) for s in sessions]

        asyncio.run(r.send(messages(0)))
        assert wait_count(cluster, 50) == (50, 50)

        clickhouse_shim.stop()
        for k in range(1, 5):
            asyncio.run(r.send(messages(k)))  # acknowledged: durable in the outbox
        backlog = asyncio.run(collect(redis_server.url, settings.prefix))["outbox"]
        assert backlog["events"] >= 200

        clickhouse_shim.start()
        assert wait_count(cluster, 250) == (250, 250)
        deadline = time.monotonic() + 30
        while asyncio.run(collect(redis_server.url, settings.prefix))["outbox"]["events"] and time.monotonic() < deadline:
            time.sleep(0.25)
        assert asyncio.run(collect(redis_server.url, settings.prefix))["outbox"]["events"] == 0
    finally:
        cluster.stop()
