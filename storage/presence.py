"""Presence in Redis, with TTLs, so every node and the CLI see the same picture.

Keys (every merchant's carry its merchant id), under `{p}m:{m}:presence:`:
- `agent:{id}` — hash status/capacity/load/updated, expires after its TTL.
- `agents` — sorted set of agent ids scored by expiry time: listing and counting without
  scanning, stale members pruned on read.
- `customers` — sorted set customer id -> expiry; `customer:{id}` -> gateway.
- `conn:{conn}` — which gateway holds a connection (TTL).
And `{p}presence:merchants` — the merchants with any presence (for the cluster-wide summary).
- `{p}hb:{role}:{node}` — a host's, gateway's or writer's heartbeat: JSON stats with a TTL.
The clock is injected: expiry in the sorted sets is computed from it, so tests need no sleeps.
"""
from __future__ import annotations

import enum
import time
from typing import Callable

import orjson
import redis.asyncio as aioredis

ROLES = ("host", "gateway", "writer")


class AgentStatus(str, enum.Enum):
    ONLINE = "online"
    BUSY = "busy"
    AWAY = "away"
    OFFLINE = "offline"


def _parse_status(status: str | AgentStatus) -> AgentStatus:
    try:
        return AgentStatus(status)
    except ValueError:
        raise ValueError(f"status must be one of {[s.value for s in AgentStatus]}, got {status!r}") from None


def _check_count(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


class Presence:
    def __init__(self, redis: aioredis.Redis, prefix: str = "pd:", clock: Callable[[], float] = time.time):
        self.r, self.p, self.clock = redis, prefix, clock

    def _m(self, merchant: str) -> str:
        if not merchant or ":" in merchant:
            raise ValueError(f"merchant must be non-empty without ':', got {merchant!r}")
        return f"{self.p}m:{merchant}:presence:"

    # -- agents ----------------------------------------------------------------------------------
    async def set_agent(self, merchant: str, agent_id: str, status: str | AgentStatus, capacity: int,
                        load: int, ttl: int = 30) -> None:
        await self.refresh([(merchant, agent_id, status, capacity, load)], [], "", ttl)

    async def get_agent(self, merchant: str, agent_id: str) -> dict | None:
        m = self._m(merchant)
        expiry = await self.r.zscore(f"{m}agents", agent_id)
        if expiry is None or expiry <= self.clock():
            return None
        raw = await self.r.hgetall(f"{m}agent:{agent_id}")
        if not raw:
            return None
        d = {k.decode(): v.decode() for k, v in raw.items()}
        return {"agent_id": agent_id, "status": d["status"], "capacity": int(d["capacity"]), "load": int(d["load"])}

    async def agents(self, merchant: str) -> list[dict]:
        m = self._m(merchant)
        await self.r.zremrangebyscore(f"{m}agents", "-inf", self.clock())
        ids = [i.decode() for i in await self.r.zrange(f"{m}agents", 0, -1)]
        found = [await self.get_agent(merchant, i) for i in ids]
        return [a for a in found if a is not None]

    async def agent_counts(self, merchant: str) -> dict[str, int]:
        counts = {s.value: 0 for s in AgentStatus if s is not AgentStatus.OFFLINE}
        for a in await self.agents(merchant):
            counts[a["status"]] += 1
        return counts

    # -- customers and connections -------------------------------------------------------------
    async def refresh(self, agents: list[tuple[str, str, str | AgentStatus, int, int]],
                      customers: list[tuple[str, str]], gateway_id: str, ttl: int = 30) -> None:
        """Agents (merchant, id, status, capacity, load) and customers (merchant, id) online through
        `gateway_id`, in one transaction; every entry is checked first, so bad input writes nothing."""
        checked = []
        for merchant, agent_id, status, capacity, load in agents:
            _check_count("capacity", capacity)
            _check_count("load", load)
            checked.append((self._m(merchant), merchant, agent_id, _parse_status(status), capacity, load))
        prefixes = [(self._m(merchant), merchant, customer_id) for merchant, customer_id in customers]
        now, merchants = self.clock(), set()
        pipe = self.r.pipeline(transaction=True)
        for m, merchant, agent_id, st, capacity, load in checked:
            if st is AgentStatus.OFFLINE:
                pipe.delete(f"{m}agent:{agent_id}")
                pipe.zrem(f"{m}agents", agent_id)
                continue
            pipe.hset(f"{m}agent:{agent_id}", mapping={"status": st.value, "capacity": capacity, "load": load,
                                                       "updated": now})
            pipe.expire(f"{m}agent:{agent_id}", ttl)
            pipe.zadd(f"{m}agents", {agent_id: now + ttl})
            merchants.add(merchant)
        for m, merchant, customer_id in prefixes:
            pipe.zadd(f"{m}customers", {customer_id: now + ttl})
            pipe.set(f"{m}customer:{customer_id}", gateway_id, ex=ttl)
            merchants.add(merchant)
        if merchants:
            pipe.sadd(f"{self.p}presence:merchants", *merchants)
        await pipe.execute()

    async def set_customer_online(self, merchant: str, customer_id: str, gateway_id: str, ttl: int = 60) -> None:
        await self.refresh([], [(merchant, customer_id)], gateway_id, ttl)

    async def set_customer_offline(self, merchant: str, customer_id: str) -> None:
        m = self._m(merchant)
        await self.r.pipeline(transaction=True).zrem(f"{m}customers", customer_id).delete(
            f"{m}customer:{customer_id}").execute()

    async def customer_online(self, merchant: str, customer_id: str) -> bool:
        expiry = await self.r.zscore(f"{self._m(merchant)}customers", customer_id)
        return expiry is not None and expiry > self.clock()

    async def customers_online(self, merchant: str) -> int:
        return await self.r.zcount(f"{self._m(merchant)}customers", f"({self.clock()}", "+inf")

    async def bind_connection(self, merchant: str, conn_id: str, gateway_id: str, ttl: int = 60) -> None:
        await self.r.set(f"{self._m(merchant)}conn:{conn_id}", gateway_id, ex=ttl)

    async def unbind_connection(self, merchant: str, conn_id: str) -> None:
        await self.r.delete(f"{self._m(merchant)}conn:{conn_id}")

    async def gateway_of(self, merchant: str, conn_id: str) -> str | None:
        raw = await self.r.get(f"{self._m(merchant)}conn:{conn_id}")
        return raw.decode() if raw else None

    # -- infrastructure heartbeats -------------------------------------------------------------
    def _hb(self, role: str, node_id: str = "") -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return f"{self.p}hb:{role}:{node_id}"

    async def heartbeat(self, role: str, node_id: str, stats: dict, ttl: float = 10) -> None:
        await self.r.set(self._hb(role, node_id), orjson.dumps(stats), px=int(ttl * 1000))

    async def alive(self, role: str, node_id: str) -> bool:
        return bool(await self.r.exists(self._hb(role, node_id)))

    async def heartbeats(self, role: str) -> dict[str, dict]:
        prefix = self._hb(role)
        keys = [k async for k in self.r.scan_iter(match=_glob_escape(prefix) + "*", count=500)]
        values = await self.r.mget(keys) if keys else []
        return {k.decode()[len(prefix):]: orjson.loads(v) for k, v in zip(keys, values) if v}

    async def summary(self) -> dict:
        """Across merchants: agents by status, customers online, merchants with presence."""
        merchants = sorted(m.decode() for m in await self.r.smembers(f"{self.p}presence:merchants"))
        agents = {s.value: 0 for s in AgentStatus if s is not AgentStatus.OFFLINE}
        customers = 0
        for merchant in merchants:
            for status, n in (await self.agent_counts(merchant)).items():
                agents[status] += n
            customers += await self.customers_online(merchant)
        return {"merchants": len(merchants), "agents": agents, "customers_online": customers}


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
