"""GET /metrics: what an operator's Prometheus reads. The gateway app on real Redis (heartbeats,
the outbox, a real writer into chDB, Redis down or hanging), then a whole peakdesk on Ray
(websocket connections, frames, the router's batch round trips, live hosts and writer), and the
Grafana dashboard: it parses and queries only metrics that exist."""
from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import trio
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.auth import TokenSigner
from gateway.context import Services
from gateway.metrics import GatewayMetrics
from storage import outbox
from storage.events_clickhouse import ClickHouseSink
from storage.presence import Presence
from storage.records import RecordStore
from storage.redis_server import free_port
from storage.writer import OutboxWriter
from tests.gateway_cluster import Peakdesk, connected
from tests.storage_helpers import make_events, run

pytestmark = pytest.mark.timeout(300)

DASHBOARD = Path(__file__).resolve().parent.parent / "k8s" / "grafana" / "peakdesk-dashboard.json"


class Scrape:
    """A parsed exposition: `value(name, **labels)` is the one sample with those labels."""

    def __init__(self, text: str):
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels) -> float:
        found = [s.value for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, f"{name}{labels}: {found}\n{self.text}"
        return found[0]

    def has(self, name: str, **labels) -> bool:
        return any(s.name == name and all(s.labels.get(k) == v for k, v in labels.items()) for s in self.samples)

    def names(self) -> set[str]:
        """Every name a query may use: families and their samples (_total, _bucket, _count...)."""
        out = set(self.families)
        for f in self.families.values():
            out |= {f.name + suffix for suffix in {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
                    .get(f.type, ())}
        return out | {s.name for s in self.samples}


async def scrape_app(app) -> Scrape:
    resp = await app.test_client().get("/metrics")
    assert resp.status_code == 200
    assert resp.content_type.startswith("text/plain")
    return Scrape((await resp.get_data()).decode())


def gateway_app(r, prefix: str, **options):
    metrics = GatewayMetrics(r, prefix, shards=[0, 1], writers=["writer-0"], **options)
    return create_app({}, services=Services(RecordStore(r, prefix), TokenSigner(b"k" * 48)), metrics=metrics)


# -- the cluster's figures, read from Redis --------------------------------------------------------

def test_a_host_heartbeat_shows_up_with_its_mailbox_depth(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        try:
            await r.set(f"{prefix}placement", json.dumps({"version": 3, "hosts": ["host-0", "host-1"],
                                                          "draining": ["host-1"]}))
            await Presence(r, prefix).heartbeat("host", "host-0", {
                "host": "host-0", "activations": 12, "mailbox": 7, "outgoing": 2, "table_version": 3,
                "draining": False, "rounds": 40, "handled": 100, "duplicates": 1, "errors": 3}, ttl=10)
            m = await scrape_app(gateway_app(r, prefix))
        finally:
            await r.aclose()
        assert m.value("peakdesk_redis_up") == 1
        assert m.value("peakdesk_placement_version") == 3
        assert m.value("peakdesk_host_mailbox_depth", host="host-0") == 7
        assert m.value("peakdesk_host_activations", host="host-0") == 12
        assert m.value("peakdesk_host_outgoing_depth", host="host-0") == 2
        assert m.value("peakdesk_host_handled", host="host-0") == 100
        assert m.value("peakdesk_host_rounds", host="host-0") == 40
        assert m.value("peakdesk_host_errors", host="host-0") == 3
        assert m.value("peakdesk_host_duplicates", host="host-0") == 1
        assert 0 <= m.value("peakdesk_host_heartbeat_age_seconds", host="host-0") < 3
        assert m.value("peakdesk_host_up", host="host-0") == 1
        assert m.value("peakdesk_host_draining", host="host-0") == 0
        # host-1 is in the table, draining, and its heartbeat expired: down, with no stale figures
        assert m.value("peakdesk_host_up", host="host-1") == 0
        assert m.value("peakdesk_host_draining", host="host-1") == 1
        assert not m.has("peakdesk_host_mailbox_depth", host="host-1")
    run(main())


def test_outbox_backlog_equals_what_was_appended_and_the_insert_lag_is_the_oldest_entry(redis_url, prefix):
    client = redis.Redis.from_url(redis_url)
    try:
        old_ms = int(time.time() * 1000) - 30_000  # an entry waiting for 30 s on shard 1
        client.xadd(outbox.stream_key(prefix, 1), {"b": outbox.encode_batch(make_events(1)), "n": 1},
                    id=f"{old_ms}-0")
        for n in (3, 2):  # two host rounds on shard 0
            pipe = client.pipeline(transaction=True)
            outbox.append(pipe, prefix, 0, make_events(n))
            pipe.execute()
    finally:
        client.close()

    async def main():
        r = aioredis.from_url(redis_url)
        try:
            await outbox.ensure_groups(r, prefix, [0])
            await outbox.read(r, "writer-0", {outbox.stream_key(prefix, 0): ">"}, count=1)  # one entry in hand
            return await scrape_app(gateway_app(r, prefix))
        finally:
            await r.aclose()

    m = run(main())
    assert m.value("peakdesk_outbox_backlog_events") == 5
    assert m.value("peakdesk_outbox_stream_entries", shard="0") == 2
    assert m.value("peakdesk_outbox_stream_entries", shard="1") == 1
    assert m.value("peakdesk_outbox_pending_entries", shard="0") == 1
    assert m.value("peakdesk_outbox_pending_entries", shard="1") == 0  # no writer group yet
    assert 29 <= m.value("peakdesk_outbox_oldest_entry_age_seconds", shard="1") < 60
    assert 0 <= m.value("peakdesk_outbox_oldest_entry_age_seconds", shard="0") < 10
    assert 29 <= m.value("peakdesk_clickhouse_insert_lag_seconds") < 60
    assert m.value("peakdesk_writer_up", writer="writer-0") == 0  # no writer is running


def test_a_running_writer_drains_the_outbox_and_its_heartbeat_shows(redis_url, prefix, chdb_dsn, database):
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=True)
        outbox.append(pipe, prefix, 0, make_events(4))
        pipe.execute()
    finally:
        client.close()

    async def main():
        writer = OutboxWriter(redis_url, lambda: ClickHouseSink(chdb_dsn, database), [0, 1], prefix=prefix,
                              name="writer-0", block_ms=50, linger_ms=1, heartbeat_s=0.05)
        task = asyncio.create_task(writer.run())
        r = aioredis.from_url(redis_url)
        app = gateway_app(r, prefix)
        try:
            await writer.wait_for(lambda s: s["events_written"] == 4, 60)
            for _ in range(100):  # the next heartbeat carries it
                m = await scrape_app(app)
                if m.has("peakdesk_writer_events_written", writer="writer-0") and \
                        m.value("peakdesk_writer_events_written", writer="writer-0") == 4:
                    return m
                await asyncio.sleep(0.05)
            raise AssertionError(m.text)
        finally:
            writer.stop()
            await task
            await writer.close()
            await r.aclose()

    m = run(main())
    assert m.value("peakdesk_writer_up", writer="writer-0") == 1
    assert m.value("peakdesk_writer_state", writer="writer-0", state="running") == 1
    assert m.value("peakdesk_writer_state", writer="writer-0", state="retrying") == 0
    assert m.value("peakdesk_writer_batches", writer="writer-0") >= 1
    assert abs(m.value("peakdesk_writer_last_insert_timestamp_seconds", writer="writer-0") - time.time()) < 60
    assert m.value("peakdesk_outbox_backlog_events") == 0
    assert m.value("peakdesk_clickhouse_insert_lag_seconds") == 0


def test_redis_down_still_answers_with_redis_up_0(prefix):
    async def main():
        r = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
        try:
            started = time.monotonic()
            m = await scrape_app(gateway_app(r, prefix))
            return m, time.monotonic() - started
        finally:
            await r.aclose()

    m, took = run(main())
    assert m.value("peakdesk_redis_up") == 0
    assert not m.has("peakdesk_outbox_backlog_events") and not m.has("peakdesk_host_up")
    assert took < 3


def test_a_hanging_redis_costs_a_scrape_at_most_its_timeout(prefix):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never answers a command
    port = silent.getsockname()[1]

    async def main():
        r = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            app = gateway_app(r, prefix, redis_timeout=0.3)
            started = time.monotonic()
            m = await scrape_app(app)
            took = time.monotonic() - started
            ticks = 0

            async def tick():  # the event loop keeps running during a scrape
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1
            ticker = asyncio.create_task(tick())
            await scrape_app(app)
            ticker.cancel()
            return m, took, ticks
        finally:
            await r.aclose()

    try:
        m, took, ticks = run(main())
    finally:
        silent.close()
    assert m.value("peakdesk_redis_up") == 0
    assert took < 1.5
    assert ticks >= 10


def test_http_requests_are_counted_by_route_template_and_status(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        try:
            app = gateway_app(r, prefix)
            client = app.test_client()
            for path in ("/healthz", "/healthz", "/no/such/thing", "/api/v1/agents/a1"):
                await client.get(path)
            return await scrape_app(app)
        finally:
            await r.aclose()

    m = run(main())
    assert m.value("peakdesk_http_requests_total", method="GET", route="/healthz", status="200") == 2
    assert m.value("peakdesk_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    agent = [s for s in m.samples if s.name == "peakdesk_http_requests_total" and s.labels["route"] != "/healthz"
             and s.labels["route"] != "<unmatched>" and s.labels["route"] != "/metrics"]
    assert [s.labels["route"] for s in agent] == ["/api/v1/agents/<agent_id>"]  # the template, never the id
    assert agent[0].labels["status"] == "401"


# -- a whole peakdesk: connections, frames, router latency, live hosts and writer ------------------

@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("metrics"), "pd-test-metrics", "mx:")
    yield p
    p.stop()


def http_scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        return Scrape(resp.read().decode())


def test_a_websocket_conversation_moves_the_gateway_metrics(pd):
    before = http_scrape(pd.port)
    result = {}

    async def main():
        async with connected(pd.url, pd.visitor_token()) as customer:
            await customer.send({"t": "open", "id": "o1"})
            session = (await customer.until("opened", id="o1"))["session"]
            await customer.send({"t": "msg", "cid": "m1", "session": session, "kind": "text",
                                 "content": {"text": "在吗？"}})
            await customer.until("ack", cid="m1")
            result["during"] = await trio.to_thread.run_sync(http_scrape, pd.port)

    trio.run(main)
    m = result["during"]
    assert m.value("peakdesk_gateway_connections", kind="visitor") == \
        before.value("peakdesk_gateway_connections", kind="visitor") + 1
    assert m.value("peakdesk_gateway_frames_received_total") >= before.value("peakdesk_gateway_frames_received_total") + 3
    assert m.value("peakdesk_gateway_frames_sent_total") >= before.value("peakdesk_gateway_frames_sent_total") + 3
    # the open and the message went to a session actor as router batches, each acknowledged
    batches = sum(s.value for s in m.samples if s.name == "peakdesk_gateway_router_batch_seconds_count")
    assert batches >= 2
    assert sum(s.value for s in m.samples if s.name == "peakdesk_gateway_router_envelopes_total") >= 2
    # the hosts and the writer of this cluster are alive
    assert m.value("peakdesk_redis_up") == 1
    assert m.value("peakdesk_host_up", host="host-0") == 1 and m.value("peakdesk_host_up", host="host-1") == 1
    assert m.value("peakdesk_writer_up", writer="writer-0") == 1
    deadline = time.monotonic() + 15  # the hosts' next heartbeats (every 2 s) carry the session
    while True:
        m = http_scrape(pd.port)
        if sum(s.value for s in m.samples if s.name == "peakdesk_host_activations") >= 1 and \
                sum(s.value for s in m.samples if s.name == "peakdesk_host_handled") >= 2:
            break
        assert time.monotonic() < deadline, m.text
        time.sleep(0.2)

    deadline = time.monotonic() + 10  # the connection closed: the gauge comes back down
    while http_scrape(pd.port).value("peakdesk_gateway_connections", kind="visitor") != \
            before.value("peakdesk_gateway_connections", kind="visitor"):
        assert time.monotonic() < deadline, "the connection gauge never came back down"
        time.sleep(0.1)


# -- the Grafana dashboard ------------------------------------------------------------------------

def test_the_dashboard_parses_and_queries_only_metrics_that_exist(pd):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 38 and dashboard["title"] and dashboard["uid"]
    assert any(i["name"] == "DS_PROMETHEUS" and i["pluginId"] == "prometheus" for i in dashboard["__inputs"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"

    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exposed = http_scrape(pd.port).names()
    queried = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bpeakdesk_[a-z0-9_]+", target["expr"]))
            assert names, (panel["title"], target["expr"])
            queried |= names
    assert not queried - exposed, f"the dashboard queries metrics /metrics does not have: {queried - exposed}"
    for family in ("peakdesk_gateway_connections", "peakdesk_host_mailbox_depth", "peakdesk_outbox_backlog_events",
                   "peakdesk_clickhouse_insert_lag_seconds", "peakdesk_gateway_router_batch_seconds_bucket"):
        assert family in queried, family
