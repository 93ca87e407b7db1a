"""The actor host as a Ray actor's body: wires an `ActorHost` to Redis, presence and the Ray
transport. A plain class — `actors/remote.py` applies `ray.remote` — started from `__init__`
so that a host Ray restarts after a crash comes back by itself (re-sending what its previous
incarnation committed but had not delivered)."""
from __future__ import annotations

import asyncio
import logging
import os
import zlib

import redis.asyncio as aioredis

from storage.actor_store import ActorStore
from storage.presence import Presence

from .host import HEARTBEAT_TTL_S, ActorHost
from .kinds import KINDS
from .placement import PlacementTable
from storage import crypto

from .settings import Settings
from .transport import RayTransport

log = logging.getLogger(__name__)


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # not inside Ray (a test's plain host)
        return ""


async def bot_workers(r, prefix: str, default: int) -> int:
    """The bot pool's size as `peakdesk scale` last set it (the cluster's shape in Redis)."""
    import orjson

    raw = await r.get(f"{prefix}cluster")
    return int(orjson.loads(raw).get("bots", default)) if raw else default


class HostService:
    def __init__(self, host_id: str, index: int, settings: dict):
        logging.basicConfig(level=logging.INFO)
        self.id = host_id
        self.settings = Settings.from_dict(settings)
        crypto.configure(self.settings.master_key_path)
        self.index = index
        self.host: ActorHost | None = None
        self._gateways: dict[str, object] = {}
        self._bots: dict[int, object] = {}
        self._bot_count = self.settings.bot_workers
        self.node = _node_id()
        self.ready = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        s = self.settings
        r = aioredis.from_url(s.redis_url, health_check_interval=10)
        presence = Presence(r, s.prefix)
        store = ActorStore(r, s.prefix, self.id, shard=s.shard_of_host(self.index))
        raw = await store.load_placement()
        table = PlacementTable.from_dict(raw) if raw else PlacementTable(0, (self.id,))

        async def heartbeat(stats: dict) -> None:
            await presence.heartbeat("host", self.id, {**stats, "node": self.node}, ttl=HEARTBEAT_TTL_S)
            self._bot_count = await bot_workers(r, s.prefix, s.bot_workers)  # `peakdesk scale` may change it

        self.host = ActorHost(self.id, store, RayTransport(s.namespace), KINDS, table,
                              idle_s=s.idle_passivate_s, on_heartbeat=heartbeat, pusher=self._push,
                              asker=self._ask)
        ran_before = bool(await r.exists(f"{s.prefix}host:{self.id}:round"))  # a previous incarnation committed
        await self.host.start()
        log.info("host %s ready (pid %d, table v%d)", self.id, os.getpid(), table.version)
        if ran_before:
            self._telling = asyncio.get_running_loop().create_task(self._tell_gateways(r))

    async def _tell_gateways(self, r) -> None:
        """After a crash: pushes are at most once, and those of our previous incarnation that it
        had committed but not sent are gone; each gateway renews its connections' subscriptions
        to what we hold (GatewayService.host_restarted), so nobody waits for one forever."""
        import orjson
        import ray

        raw = await r.get(f"{self.settings.prefix}cluster")
        for name in (orjson.loads(raw).get("gateways", []) if raw else []):
            try:
                gateway = ray.get_actor(name, namespace=self.settings.namespace)
                renewed = await asyncio.wait_for(gateway.host_restarted.remote(self.id), 60)
                log.info("host %s: %s renewed %d subscriptions", self.id, name, renewed)
            except ValueError:  # not running (yet: a whole cluster starting again on its old data)
                log.info("host %s: %s is not running", self.id, name)
            except Exception as exc:  # that gateway is down too: its clients resume when they reconnect
                log.warning("host %s: could not tell %s about the restart: %s", self.id, name, exc)

    async def _push(self, gateway: str, items: list) -> None:
        import ray

        handle = self._gateways.get(gateway)
        if handle is None:
            handle = self._gateways[gateway] = ray.get_actor(gateway, namespace=self.settings.namespace)
        try:
            await handle.push.remote(items)
        except Exception:
            self._gateways.pop(gateway, None)  # look it up again next time (it may have moved)
            raise

    async def _ask(self, service: str, requests: list[dict]) -> list[dict]:
        """Requests to the bot pool, spread over its workers by session; a batch per worker."""
        import ray

        workers = self._bot_count
        if service != "bot" or workers == 0:  # nobody to ask: the sessions hand over at once
            return [{"actor": r["actor"], "type": "bot_reply",
                     "body": {"req": r.get("req"), "mode": r.get("mode"), "failed": f"no {service} workers"}}
                    for r in requests]
        batches: dict[int, list[dict]] = {}
        for r in requests:
            batches.setdefault(zlib.crc32(r["actor"].encode()) % workers, []).append(r)

        async def call(i: int, batch: list[dict]) -> list[dict]:
            handle = self._bots.get(i)
            if handle is None:
                handle = self._bots[i] = ray.get_actor(f"bot-{i}", namespace=self.settings.namespace)
            try:
                return await handle.handle.remote(batch)
            except Exception:
                self._bots.pop(i, None)
                raise

        results = await asyncio.gather(*(call(i, b) for i, b in batches.items()), return_exceptions=True)
        answers = []
        for result in results:
            if isinstance(result, BaseException):  # those sessions' timers hand over
                log.warning("host %s: bot worker call failed: %s", self.id, result)
            else:
                answers.extend(result)
        return answers

    async def deliver(self, payload: bytes) -> int:
        await self.ready
        return await self.host.deliver(payload)

    async def wait_ready(self) -> dict:
        await self.ready
        return self.host.statistics()

    async def statistics(self) -> dict:
        await self.ready
        return self.host.statistics()

    async def set_table(self, table: dict) -> int:
        await self.ready
        return await self.host.set_table(table)

    async def drain(self) -> int:
        await self.ready
        return await self.host.drain()

    async def rebalance(self) -> int:
        await self.ready
        return await self.host.rebalance()

    async def quiet(self, timeout: float = 30.0) -> dict:
        """Wait until nothing we committed is still on its way to another host (before this
        host is removed for good); returns the statistics then."""
        await self.ready
        deadline = asyncio.get_running_loop().time() + timeout
        while (self.host.router.depth() or self.host.inbox or self.host._sending) and \
                asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return self.host.statistics()

    def node_id(self) -> str:
        return self.node

    async def actor_state(self, key: str) -> dict | None:
        await self.ready
        return self.host.actor_state(key)

    async def stop(self) -> None:
        """Stop the loop before the process goes (what is committed stays; senders re-send the rest)."""
        if self.host is not None:
            await self.host.stop()

    def pid(self) -> int:
        return os.getpid()
