"""The gateway as a Ray actor's body (as Ray Serve runs its proxies): the Quart app on
Hypercorn in this actor's event loop, so actors can push to connections through its handle.

Health: `ray` — every host in the placement table answers; `redis` — PING; `clickhouse` —
the writers reach ClickHouse (in embedded mode only the writer may open chDB).
"""
from __future__ import annotations

import asyncio
import logging
import os

import orjson
import redis.asyncio as aioredis

from actors.placement import PlacementTable
from actors.router import Router
from actors.settings import Settings
from storage import crypto
from actors.transport import RayTransport
from storage.actor_store import ActorStore, read_log
from storage.attachments import open_attachment_store
from storage.presence import Presence
from storage.records import RecordStore

from .app import create_app
from .auth import TokenSigner
from .connection import Hub
from .context import Services
from .metrics import GatewayMetrics
from .protocol import CLOSE_GOING_AWAY
from .server import GatewayServer

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
PRESENCE_EVERY = 3      # heartbeats between presence refreshes (6 s) ...
PRESENCE_TTL_S = 30     # ... well inside the TTL: a gateway that dies takes its people offline in 30 s


class GatewayService:
    def __init__(self, name: str, settings: dict):
        self.name = name
        self.settings = Settings.from_dict(settings)
        crypto.configure(self.settings.master_key_path)
        self.redis = redis_client(self.settings.redis_url)
        self.presence = Presence(self.redis, self.settings.prefix)
        checks = {"ray": self._check_hosts, "redis": self._check_redis, "clickhouse": self._check_clickhouse}
        self.hub = Hub()
        # /metrics reads Redis on its own client with short timeouts: a scrape never waits long
        self.metrics = GatewayMetrics(
            redis_client(self.settings.redis_url, socket_connect_timeout=1, socket_timeout=1),
            self.settings.prefix, shards=range(self.settings.outbox_shards),
            writers=[f"writer-{i}" for i in range(self.settings.writers)], hub=self.hub)
        self.router = Router(name, RayTransport(self.settings.namespace), PlacementTable(0, ()),
                             load_table=self._load_table, on_pushes=self.hub.deliver,
                             on_batch_done=self.metrics.batch_done)
        self.metrics.router = self.router
        self.log_store = ActorStore(self.redis, self.settings.prefix)
        services = Services(RecordStore(self.redis, self.settings.prefix),
                            TokenSigner(load_secret(self.settings.secret_file)),
                            router=self.router, hub=self.hub, name=name, read_log=self._read_log,
                            attachments=open_attachment_store(self.settings, self.redis),   # sealed at rest
                            query=self._query, export=self._export,
                            ask_bot=self._ask_bot if self.settings.bot_workers else None,
                            max_connections_per_ip=self.settings.max_connections_per_ip,
                            frames_per_s=self.settings.frames_per_s,
                            widget_sessions_per_ip_per_min=self.settings.widget_sessions_per_ip_per_min)
        self.server = GatewayServer(create_app(checks, services=services, metrics=self.metrics),
                                    self.settings.host, self.settings.port,
                                    self.settings.tls_cert_file, self.settings.tls_key_file)
        self._handles: dict[str, object] = {}
        self._switching: asyncio.Task | None = None
        self.ready = asyncio.get_running_loop().create_task(self._start())

    async def _ask_bot(self, merchant: str, text: str, context: list[str]) -> dict:
        import ray

        try:
            worker = ray.get_actor("bot-0", namespace=self.settings.namespace)
        except ValueError as exc:
            raise LookupError("bot-0 is not running") from exc
        return await worker.try_message.remote(merchant, text, context)

    async def _start(self) -> int:
        table = await self._load_table()
        if table is not None:
            await self.router.set_table(table)
        await self.server.start()
        asyncio.get_running_loop().create_task(self._heartbeats())
        log.info("gateway %s listening on %s:%d", self.name, self.settings.host, self.server.bound_port)
        return self.server.bound_port

    async def wait_ready(self) -> int:
        return await self.ready

    def pid(self) -> int:
        return os.getpid()

    async def push(self, items: list) -> int:
        """Frames from actors for this gateway's connections: [(connection id, frame), ...]."""
        return self.hub.deliver(items)

    async def host_restarted(self, host_id: str) -> int:
        """A host came back after a crash. What its previous incarnation had committed but not
        yet pushed died with it — a message for someone who stays connected, the ack of a
        message whose re-sent batch the new incarnation then dropped as a duplicate, the
        conversations an agent was given — and nobody connected here would ever ask for it.
        So every connection re-subscribes each conversation that host holds from the last seq
        it was sent (the conversation's log fills any gap, and its state comes with
        `subscribed`), and each agent whose actor lives there hears its own state again.
        Returns how many subscriptions were renewed."""
        from actors.envelope import ActorRef, Envelope

        await self.ready
        table, envs = self.router.table, []
        for conn in list(self.hub.connections.values()):
            p = conn.principal
            body = {"from": {"kind": p.kind, "id": p.id, "role": p.role}, "connection": f"{self.name}/{conn.id}"}
            try:
                if p.kind == "agent" and table.owner(ActorRef("agent", p.merchant, p.id)) == host_id:
                    envs.append(Envelope(ActorRef("agent", p.merchant, p.id), "subscribe", dict(body)))
                for session, last in list(conn.last_seq.items()):
                    ref = ActorRef("session", p.merchant, session)
                    if table.owner(ref) == host_id:
                        envs.append(Envelope(ref, "subscribe", {**body, "after": last, "role": p.role, "resync": True}))
            except LookupError:  # no table yet: nothing placed, nothing to renew
                return 0
        if envs:
            await self.router.send(envs)
            log.info("gateway %s: host %s restarted; renewed %d subscriptions", self.name, host_id, len(envs))
        return len(envs)

    async def say_goodbye(self, reason: str = "gateway restarting") -> int:
        """Tell every client to reconnect elsewhere (close 4000), before this gateway stops."""
        conns = list(self.hub.connections.values())
        for conn in conns:
            conn.offer({"t": "bye", "reason": reason, "reconnect": True})
        await asyncio.sleep(0.2)  # let the writers flush the byes
        await asyncio.gather(*(c.close(CLOSE_GOING_AWAY, reason) for c in conns), return_exceptions=True)
        return len(conns)

    async def _load_table(self):
        raw = await self.redis.get(f"{self.settings.prefix}placement")
        return PlacementTable.from_dict(orjson.loads(raw)) if raw else None

    async def _read_log(self, merchant: str, session: str, after: int, upto: int) -> list:
        key = self.log_store.log_key("session", merchant, session)
        return [(seq, f) for seq, f in await read_log(self.redis, self.settings.prefix, merchant, key, after, count=500)
                if seq <= upto]

    async def _heartbeats(self) -> None:
        beat = 0
        while True:
            try:
                await self.presence.heartbeat("gateway", self.name, {
                    "address": f"{self.settings.host}:{self.server.bound_port}", "pid": os.getpid(),
                    **self.hub.statistics()}, ttl=10)
                if beat % PRESENCE_EVERY == 0:
                    await self._publish_presence()
                table = await self._load_table()  # a scale or drain elsewhere: switch once idle
                if table is not None and table.version > self.router.table.version and \
                        (self._switching is None or self._switching.done()):
                    self._switching = asyncio.get_running_loop().create_task(self.router.set_table(table))
            except Exception:  # missed heartbeat: retried next period
                log.exception("gateway heartbeat failed")
            beat += 1
            await asyncio.sleep(HEARTBEAT_S)

    async def _publish_presence(self) -> None:
        """Who is online through this gateway, for any node and the CLI to see: agents with the
        status, capacity and load their actor last told their console; customers online."""
        agents, customers = [], set()
        for conn in list(self.hub.connections.values()):
            p, v = conn.principal, conn.agent_view
            if p.kind == "agent" and v is not None:
                agents.append((p.merchant, p.id, v["status"], int(v["capacity"]), int(v["load"])))
            elif p.kind in ("customer", "visitor"):
                customers.add((p.merchant, p.id))
        await self.presence.refresh(agents, sorted(customers), self.name, ttl=PRESENCE_TTL_S)

    # -- health checks: each raises with the reason -----------------------------------------------
    async def _check_redis(self) -> None:
        await self.redis.ping()

    async def _check_hosts(self) -> None:
        raw = await self.redis.get(f"{self.settings.prefix}placement")
        hosts = orjson.loads(raw)["hosts"] if raw else []
        if not hosts:
            raise RuntimeError("no actor hosts in the placement table")
        try:
            await _remote_calls([self._handle(h) for h in hosts], "statistics")
        except Exception:
            for h in hosts:  # one started again after its node died is another actor: look them up again
                self._handles.pop(h, None)
            raise

    async def _query(self, sql: str, parameters: dict | None = None) -> list:
        """A read through a writer (in embedded mode only the writer may open chDB)."""
        self._next_writer = (getattr(self, "_next_writer", -1) + 1) % self.settings.writers
        return await self._handle(f"writer-{self._next_writer}").query.remote(sql, parameters)

    async def _export(self, sql: str, parameters: dict | None, fmt: str) -> bytes:
        self._next_writer = (getattr(self, "_next_writer", -1) + 1) % self.settings.writers
        return await self._handle(f"writer-{self._next_writer}").export.remote(sql, parameters, fmt)

    async def _check_clickhouse(self) -> None:
        await _remote_calls([self._handle(f"writer-{i}") for i in range(self.settings.writers)], "ping")

    def _handle(self, name: str):
        """Actor handles, looked up once (a GCS round trip) and kept: Ray restarts an actor
        under the same handle."""
        import ray

        handle = self._handles.get(name)
        if handle is None:
            handle = self._handles[name] = ray.get_actor(name, namespace=self.settings.namespace)
        return handle

    async def stop(self) -> None:
        await self.say_goodbye("gateway stopping")
        await self.server.stop()


def redis_client(url: str, **options) -> aioredis.Redis:
    """redis-py 8.1 leaves maintenance notifications at "auto", which its pool takes for "on" and
    then skips the check of a pooled connection on checkout; with no retries by default, every
    connection idle in the pool when Redis restarted failed its next command (REST 500s, dropped
    websockets, long after Redis was back — bench/chaos's redis fault). Off, the pool replaces a
    connection the server closed before using it; no command is ever sent twice."""
    from redis.maint_notifications import MaintNotificationsConfig

    return aioredis.from_url(url, maint_notifications_config=MaintNotificationsConfig(enabled=False), **options)


async def _remote_calls(handles: list, method: str) -> None:
    """Call `method` on every actor; an actor's own exception is re-raised as itself, not
    wrapped in Ray's RayTaskError with a remote traceback (health output stays one line)."""
    import ray.exceptions

    try:
        await asyncio.gather(*(getattr(h, method).remote() for h in handles))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, BaseException) else RuntimeError(str(exc).splitlines()[0])
        raise cause from None


def load_secret(path: str) -> bytes:
    """The token-signing secret: PEAKDESK_SECRET if set (multi-node deployments inject it),
    else the file `peakdesk up` created under the data dir."""
    from_env = os.environ.get("PEAKDESK_SECRET")
    if from_env:
        return from_env.encode()
    with open(path, "rb") as f:
        return f.read().strip()
