"""`GET /metrics`: Prometheus text format for operators (docs/operations.md, "Metrics").

Two kinds of figures:
- this gateway's own, kept in process: websocket connections by principal kind, frames in and
  out, HTTP requests by route template and status, and the round trip of every batch its router
  sends to an actor host (acknowledgement latency, re-sends included);
- the cluster's, read from Redis on each scrape — the same keys `peakdesk status` reads, but
  never by scanning the keyspace: hosts from the placement table, writers and outbox shards
  from the settings. Heartbeats are the hosts' and writers' own statistics (written every 2 s);
  their counters are exported as gauges of the last heartbeat (they restart from 0 with the
  process: `rate()` copes). The Redis reads are two pipelined round trips bounded by
  `redis_timeout`; when Redis is down or slow the scrape still answers, with
  `peakdesk_redis_up 0` and without the cluster's figures.

No label carries a merchant, a user or a connection: hosts, writers, shards, routes and kinds
are few.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Iterable, Iterator

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from actors.host import HEARTBEAT_TTL_S as HOST_HEARTBEAT_TTL_S
from storage import jobs, outbox
from storage.tickets.store import due_key
from storage.writer import WriterOptions

log = logging.getLogger(__name__)

# A heartbeat's age is its TTL less the TTL it has left (heartbeats carry no time of their own).
WRITER_HEARTBEAT_TTL_S = WriterOptions().heartbeat_ttl_s
CONNECTION_KINDS = ("customer", "visitor", "agent")
WRITER_STATES = ("idle", "running", "retrying", "paused", "stopped")   # paused: a backup holds them
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# host heartbeat field -> (metric, help); cumulative since the host process started
HOST_COUNTERS = {
    "rounds": ("peakdesk_host_rounds", "Rounds committed (cumulative since the host started)"),
    "handled": ("peakdesk_host_handled", "Envelopes handled by actors (cumulative)"),
    "errors": ("peakdesk_host_errors", "Envelopes whose handler raised (cumulative)"),
    "duplicates": ("peakdesk_host_duplicates", "Re-sent envelopes dropped by the per-origin watermark (cumulative)"),
    "rejected": ("peakdesk_host_rejected", "Envelopes refused by their actor (cumulative)"),
    "forwarded": ("peakdesk_host_forwarded", "Envelopes forwarded to the host their actor lives on (cumulative)"),
    "activated": ("peakdesk_host_activated", "Actor activations (cumulative)"),
    "passivated": ("peakdesk_host_passivated", "Actors passivated after idling (cumulative)"),
    "commits_retried": ("peakdesk_host_commits_retried", "Round commits retried, e.g. Redis away (cumulative)"),
    "push_failures": ("peakdesk_host_push_failures", "Failed pushes to gateways (cumulative)"),
    "ask_failures": ("peakdesk_host_ask_failures", "Failed calls to worker pools such as the bot (cumulative)"),
}
WRITER_COUNTERS = {
    "events_written": ("peakdesk_writer_events_written", "Events stored in ClickHouse and acknowledged (cumulative)"),
    "batches": ("peakdesk_writer_batches", "Inserts into ClickHouse (cumulative)"),
    "redelivered_batches": ("peakdesk_writer_redelivered_batches", "Inserts of possibly stored batches (cumulative)"),
    "retries": ("peakdesk_writer_retries", "Failed steps retried, e.g. ClickHouse down (cumulative)"),
    "dead_entries": ("peakdesk_writer_dead_entries", "Undecodable outbox entries moved to the dead-letter stream (cumulative)"),
}


class GatewayMetrics:
    """The metrics of one gateway. `redis`: an asyncio client for the cluster's figures (give it
    short socket timeouts), or None for this gateway's own figures only. `hub` and `router`
    (gateway.connection.Hub, actors.router.Router) may be set after construction."""

    def __init__(self, redis: Any = None, prefix: str = "pd:", shards: Iterable[int] = (),
                 writers: Iterable[str] = (), hub: Any = None, router: Any = None, redis_timeout: float = 1.0):
        self.redis, self.prefix = redis, prefix
        self.shards, self.writers = list(shards), list(writers)
        self.hub, self.router, self.redis_timeout = hub, router, redis_timeout
        disable_created_metrics()  # no `*_created` series beside every counter (process-wide; only we export)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_in = Counter("peakdesk_gateway_frames_received", "Websocket frames received from clients",
                                 registry=r)
        self.frames_out = Counter("peakdesk_gateway_frames_sent", "Websocket frames sent to clients", registry=r)
        self.websockets = Counter("peakdesk_gateway_websockets_accepted", "Websocket handshakes accepted", registry=r)
        self.http = Counter("peakdesk_http_requests", "HTTP requests by route template and status",
                            ["method", "route", "status"], registry=r)
        self.batch_seconds = Histogram("peakdesk_gateway_router_batch_seconds",
                                       "Round trip of a batch of envelopes to an actor host, until acknowledged "
                                       "(durable), re-sends included", ["host"], buckets=BATCH_BUCKETS, registry=r)
        self.batch_envelopes = Counter("peakdesk_gateway_router_envelopes",
                                       "Envelopes acknowledged by actor hosts", ["host"], registry=r)
        self.registry.register(_Callback(self._local_families))

    # -- hooks ------------------------------------------------------------------------------------
    def batch_done(self, host: str, seconds: float, envelopes: int) -> None:
        """actors.router.Router's `on_batch_done`."""
        self.batch_seconds.labels(host).observe(seconds)
        self.batch_envelopes.labels(host).inc(envelopes)

    def install(self, app) -> None:
        """Mount `GET /metrics`, count HTTP requests and websocket frames on `app` (Quart)."""
        from quart import Response, request

        metrics = self

        @app.after_request
        async def count_request(response):
            rule = request.url_rule
            metrics.http.labels(request.method, rule.rule if rule is not None else "<unmatched>",
                                str(response.status_code)).inc()
            return response

        @app.get("/metrics")
        async def scrape() -> Response:
            body, content_type = await metrics.render(request.headers.get("Accept", ""))
            return Response(body, status=200, content_type=content_type)

        app.asgi_app = _FrameCounter(app.asgi_app, self)

    # -- a scrape -------------------------------------------------------------------------------
    async def render(self, accept: str = "") -> tuple[bytes, str]:
        families: list[Metric] = []
        if self.redis is not None:
            families = await self._cluster_families()
        encoder, content_type = choose_encoder(accept)
        return encoder(_Scrape(self.registry, families)), content_type

    async def _cluster_families(self) -> list[Metric]:
        started = time.monotonic()
        try:
            state = await asyncio.wait_for(self._read_redis(), self.redis_timeout)
        except Exception as exc:  # down, slow, or refusing: the scrape says so and goes on
            log.warning("metrics: cluster state not read from Redis: %s: %s", type(exc).__name__, exc)
            state = None
        up = GaugeMetricFamily("peakdesk_redis_up", "1 if this scrape read the cluster's state from Redis in time")
        up.add_metric([], 0 if state is None else 1)
        took = GaugeMetricFamily("peakdesk_metrics_redis_read_seconds", "Time this scrape spent reading Redis")
        took.add_metric([], time.monotonic() - started)
        return [up, took] + ([] if state is None else _state_families(state))

    async def _read_redis(self) -> dict:
        r, p = self.redis, self.prefix
        pipe = r.pipeline(transaction=False)
        pipe.time()
        pipe.get(f"{p}placement")
        pipe.get(outbox.backlog_key(p))
        pipe.xlen(outbox.dead_key(p))
        pipe.xlen(jobs.stream(p))
        pipe.zcard(jobs.retry_key(p))
        pipe.llen(jobs.dead_key(p))
        pipe.zcard(due_key(p))
        for shard in self.shards:
            key = outbox.stream_key(p, shard)
            pipe.xlen(key)
            pipe.xrange(key, "-", "+", count=1)
            pipe.xpending(key, outbox.GROUP)
        for name in self.writers:
            pipe.get(f"{p}hb:writer:{name}")
            pipe.pttl(f"{p}hb:writer:{name}")
        res = await pipe.execute(raise_on_error=False)
        for value in res[:4]:
            if isinstance(value, Exception):
                raise value
        (sec, usec), raw_table, backlog, dead = res[:4]
        job_counts = [int(v) if isinstance(v, int) else 0 for v in res[4:8]]
        now = sec + usec / 1e6  # Redis's clock: stream ids are stamped by it
        table = orjson.loads(raw_table) if raw_table else {"version": 0, "hosts": [], "draining": []}
        state: dict[str, Any] = {"now": now, "table": table, "backlog": int(backlog or 0), "dead": int(dead or 0),
                                 "shards": {}, "writers": {}, "hosts": {}, "jobs": job_counts}
        i = 8
        for shard in self.shards:
            length, first, pending = res[i:i + 3]
            i += 3
            oldest = None
            if isinstance(first, list) and first:
                entry_id = first[0][0]
                oldest = int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0]) / 1000
            state["shards"][str(shard)] = {
                "entries": length if isinstance(length, int) else 0,
                "pending": int(pending["pending"]) if isinstance(pending, dict) else 0,  # NOGROUP: no writer yet
                "oldest": oldest}
        for name in self.writers:
            state["writers"][name] = _beat(res[i], res[i + 1], WRITER_HEARTBEAT_TTL_S)
            i += 2
        hosts = sorted(set(table.get("hosts", [])) | set(table.get("draining", [])), key=_natural)
        if hosts:
            pipe = r.pipeline(transaction=False)
            for host in hosts:
                pipe.get(f"{p}hb:host:{host}")
                pipe.pttl(f"{p}hb:host:{host}")
            res = await pipe.execute(raise_on_error=False)
            for j, host in enumerate(hosts):
                state["hosts"][host] = _beat(res[2 * j], res[2 * j + 1], HOST_HEARTBEAT_TTL_S)
        return state

    def _local_families(self) -> Iterator[Metric]:
        if self.hub is not None:
            by_kind = dict.fromkeys(CONNECTION_KINDS, 0)
            queued = 0
            for conn in list(self.hub.connections.values()):
                by_kind[conn.principal.kind] = by_kind.get(conn.principal.kind, 0) + 1
                queued += conn.queue.qsize()
            g = GaugeMetricFamily("peakdesk_gateway_connections",
                                  "Open websocket connections past hello, by principal kind", labels=["kind"])
            for kind, n in sorted(by_kind.items()):
                g.add_metric([kind], n)
            yield g
            q = GaugeMetricFamily("peakdesk_gateway_outgoing_frames", "Frames queued for clients, all connections")
            q.add_metric([], queued)
            yield q
        if self.router is not None:
            depth = GaugeMetricFamily("peakdesk_gateway_router_queued_envelopes",
                                      "Envelopes waiting for their batch to an actor host", labels=["host"])
            resends = CounterMetricFamily("peakdesk_gateway_router_resends",
                                          "Batches re-sent because a host was unreachable", labels=["host"])
            for host, ch in sorted(self.router.channels.items()):
                depth.add_metric([host], ch.depth())
                resends.add_metric([host], ch.retries)
            yield depth
            yield resends


def _beat(raw: Any, pttl: Any, ttl_s: float) -> dict | None:
    """A heartbeat's stats plus `_age` (seconds since it was written, from its remaining TTL)."""
    if not raw or isinstance(raw, Exception):
        return None
    try:
        stats = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(stats, dict):
        return None
    stats["_age"] = max(0.0, ttl_s - pttl / 1000) if isinstance(pttl, int) and pttl >= 0 else math.nan
    return stats


def _state_families(state: dict) -> list[Metric]:
    now, table = state["now"], state["table"]
    out: list[Metric] = []

    def gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=labels or [])
        out.append(family)
        return family

    gauge("peakdesk_placement_version", "Version of the placement table").add_metric([], table.get("version", 0))

    # -- actor hosts --------------------------------------------------------------------------
    draining_in_table = set(table.get("draining", []))
    up = gauge("peakdesk_host_up", "1 while the host's heartbeat is alive (it expires 10 s after the last)", ["host"])
    age = gauge("peakdesk_host_heartbeat_age_seconds", "Seconds since the host's last heartbeat", ["host"])
    draining = gauge("peakdesk_host_draining", "1 if the host is draining (placement table or its heartbeat)", ["host"])
    fields = {"activations": gauge("peakdesk_host_activations", "Actors active on the host", ["host"]),
              "mailbox": gauge("peakdesk_host_mailbox_depth", "Envelopes waiting for the host's next round", ["host"]),
              "outgoing": gauge("peakdesk_host_outgoing_depth", "Envelopes queued to other hosts", ["host"]),
              "table_version": gauge("peakdesk_host_table_version", "Placement table version the host uses", ["host"])}
    counters = {k: gauge(name, doc, ["host"]) for k, (name, doc) in HOST_COUNTERS.items()}
    for host, stats in state["hosts"].items():
        up.add_metric([host], 0 if stats is None else 1)
        draining.add_metric([host], int(host in draining_in_table or bool(stats and stats.get("draining"))))
        if stats is None:
            continue
        if not math.isnan(stats["_age"]):
            age.add_metric([host], stats["_age"])
        for key, family in (*fields.items(), *counters.items()):
            if _number(stats.get(key)):
                family.add_metric([host], stats[key])

    # -- outbox and ClickHouse ----------------------------------------------------------------
    gauge("peakdesk_outbox_backlog_events", "Events in the Redis outbox not yet stored in ClickHouse"
          ).add_metric([], state["backlog"])
    gauge("peakdesk_outbox_dead_entries", "Undecodable outbox entries kept for a human").add_metric([], state["dead"])
    queued, retrying, given_up, deadlines = state["jobs"]
    gauge("peakdesk_jobs_queued", "Side effects (webhook deliveries, ticket notices) waiting to run").add_metric([], queued)
    gauge("peakdesk_jobs_retrying", "Jobs that failed and wait for their next attempt").add_metric([], retrying)
    gauge("peakdesk_jobs_dead", "Jobs given up after their last attempt, kept for a human").add_metric([], given_up)
    gauge("peakdesk_ticket_deadlines", "Ticket SLA reminders and deadlines still to come").add_metric([], deadlines)
    entries = gauge("peakdesk_outbox_stream_entries", "Entries in the outbox stream (one per host round)", ["shard"])
    pending = gauge("peakdesk_outbox_pending_entries", "Entries read by a writer, not yet acknowledged", ["shard"])
    oldest = gauge("peakdesk_outbox_oldest_entry_age_seconds", "Age of the oldest entry in the shard (0 when empty)",
                   ["shard"])
    lag = 0.0
    for shard, s in state["shards"].items():
        entries.add_metric([shard], s["entries"])
        pending.add_metric([shard], s["pending"])
        shard_age = max(0.0, now - s["oldest"]) if s["oldest"] is not None else 0.0
        oldest.add_metric([shard], shard_age)
        lag = max(lag, shard_age)
    gauge("peakdesk_clickhouse_insert_lag_seconds",
          "Age of the oldest event not yet in ClickHouse, over all outbox shards (0 when the outbox is empty)"
          ).add_metric([], lag)

    # -- writers ------------------------------------------------------------------------------
    w_up = gauge("peakdesk_writer_up", "1 while the writer's heartbeat is alive", ["writer"])
    w_age = gauge("peakdesk_writer_heartbeat_age_seconds", "Seconds since the writer's last heartbeat", ["writer"])
    w_state = gauge("peakdesk_writer_state", "The writer's state (1 for the current one)", ["writer", "state"])
    w_insert = gauge("peakdesk_writer_last_insert_timestamp_seconds", "Unix time of the writer's last insert",
                     ["writer"])
    w_error = gauge("peakdesk_writer_last_error_timestamp_seconds", "Unix time of the writer's last error", ["writer"])
    w_counters = {k: gauge(name, doc, ["writer"]) for k, (name, doc) in WRITER_COUNTERS.items()}
    for name, stats in state["writers"].items():
        w_up.add_metric([name], 0 if stats is None else 1)
        if stats is None:
            continue
        if not math.isnan(stats["_age"]):
            w_age.add_metric([name], stats["_age"])
        for st in WRITER_STATES:
            w_state.add_metric([name, st], int(stats.get("state") == st))
        if _number(stats.get("last_insert_at")):
            w_insert.add_metric([name], stats["last_insert_at"])
        if _number(stats.get("last_error_at")):
            w_error.add_metric([name], stats["last_error_at"])
        for key, family in w_counters.items():
            if _number(stats.get(key)):
                family.add_metric([name], stats[key])
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _natural(host_id: str) -> tuple:
    head, _, tail = host_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (host_id, 0)


class _Callback:
    """A collector whose families are computed at collection time."""

    def __init__(self, fn):
        self.fn = fn

    def collect(self) -> Iterator[Metric]:
        return self.fn()

    def describe(self) -> list:
        return []  # names known only at collection: nothing to check for clashes


class _Scrape:
    """One scrape: the gateway's registry, then the families read from Redis for it."""

    def __init__(self, registry: CollectorRegistry, families: list[Metric]):
        self.registry, self.families = registry, families

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.families


class _FrameCounter:
    """ASGI middleware counting websocket frames both ways (and accepted handshakes)."""

    def __init__(self, app, metrics: GatewayMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        metrics = self.metrics

        async def counted_receive():
            message = await receive()
            if message["type"] == "websocket.receive":
                metrics.frames_in.inc()
            return message

        async def counted_send(message):
            kind = message["type"]
            if kind == "websocket.send":
                metrics.frames_out.inc()
            elif kind == "websocket.accept":
                metrics.websockets.inc()
            await send(message)

        return await self.app(scope, counted_receive, counted_send)
