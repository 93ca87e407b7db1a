"""Presence in real Redis: agents, customers, connections, heartbeats; expiry by an injected
clock; nothing crosses merchants; bad input refused without writing."""
from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from storage.presence import Presence


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


def run(fn, redis_url, prefix, clock=None):
    async def main():
        r = aioredis.from_url(redis_url)
        try:
            return await fn(Presence(r, prefix, clock or Clock()), r)
        finally:
            await r.aclose()
    return asyncio.run(main())


def test_agent_status_is_visible_and_counted(redis_url, prefix):
    async def body(p, r):
        await p.set_agent("m1", "alice", "online", capacity=5, load=2)
        await p.set_agent("m1", "bob", "away", capacity=3, load=0)
        assert await p.get_agent("m1", "alice") == {"agent_id": "alice", "status": "online", "capacity": 5, "load": 2}
        assert await p.agent_counts("m1") == {"online": 1, "busy": 0, "away": 1}
        await p.set_agent("m1", "alice", "offline", capacity=5, load=0)
        assert await p.get_agent("m1", "alice") is None
        assert [a["agent_id"] for a in await p.agents("m1")] == ["bob"]
    run(body, redis_url, prefix)


def test_agents_expire_without_heartbeat_and_keys_carry_ttls(redis_url, prefix):
    clock = Clock()

    async def body(p, r):
        await p.set_agent("m1", "alice", "busy", capacity=2, load=2, ttl=30)
        assert 0 < await r.ttl(f"{prefix}m:m1:presence:agent:alice") <= 30
        clock.t += 31
        assert await p.get_agent("m1", "alice") is None
        assert await p.agents("m1") == []
    run(body, redis_url, prefix, clock)


def test_merchants_never_see_each_others_presence(redis_url, prefix):
    async def body(p, r):
        await p.set_agent("m1", "alice", "online", capacity=1, load=0)
        await p.set_customer_online("m1", "c1", "gateway-0")
        assert await p.agents("m2") == []
        assert await p.get_agent("m2", "alice") is None
        assert not await p.customer_online("m2", "c1")
        assert await p.customers_online("m2") == 0
    run(body, redis_url, prefix)


@pytest.mark.parametrize("kwargs,word", [({"status": "sleeping"}, "status"), ({"capacity": -1}, "capacity"),
                                         ({"load": "3"}, "load")])
def test_bad_agent_presence_is_refused_and_writes_nothing(redis_url, prefix, kwargs, word):
    async def body(p, r):
        args = {"status": "online", "capacity": 1, "load": 0, **kwargs}
        with pytest.raises(ValueError, match=word):
            await p.set_agent("m1", "alice", **args)
        assert [k async for k in r.scan_iter(match=f"{prefix}*")] == []
    run(body, redis_url, prefix)


def test_customers_and_connections(redis_url, prefix):
    clock = Clock()

    async def body(p, r):
        await p.set_customer_online("m1", "顾客1", "gateway-1", ttl=60)
        await p.bind_connection("m1", "conn-9", "gateway-1", ttl=60)
        assert await p.customer_online("m1", "顾客1") and await p.customers_online("m1") == 1
        assert await p.gateway_of("m1", "conn-9") == "gateway-1"
        await p.unbind_connection("m1", "conn-9")
        assert await p.gateway_of("m1", "conn-9") is None
        clock.t += 61
        assert not await p.customer_online("m1", "顾客1")
    run(body, redis_url, prefix, clock)


def test_heartbeats_listed_by_role_and_summary_counts(redis_url, prefix):
    async def body(p, r):
        await p.heartbeat("host", "host-0", {"activations": 3})
        await p.heartbeat("host", "host-1", {"activations": 4})
        await p.heartbeat("writer", "writer-0", {"events_written": 9})
        assert await p.heartbeats("host") == {"host-0": {"activations": 3}, "host-1": {"activations": 4}}
        assert await p.alive("writer", "writer-0") and not await p.alive("gateway", "gateway-0")
        assert 0 < await r.pttl(f"{prefix}hb:host:host-0") <= 10_000
        await p.set_agent("m1", "a", "online", capacity=1, load=0)
        await p.set_agent("m2", "b", "busy", capacity=1, load=1)
        await p.set_customer_online("m2", "c", "gateway-0")
        assert await p.summary() == {"merchants": 2, "agents": {"online": 1, "busy": 1, "away": 0},
                                     "customers_online": 1}
        with pytest.raises(ValueError, match="role"):
            await p.heartbeat("robot", "x", {})
    run(body, redis_url, prefix)


def test_a_gateways_whole_picture_is_refreshed_in_one_call_and_expires_with_its_ttl(redis_url, prefix):
    clock = Clock()

    async def body(p, r):
        await p.refresh([("m1", "alice", "online", 5, 2), ("m2", "zhang", "busy", 3, 3)],
                        [("m1", "v_1"), ("m2", "c_9")], "gateway-0", ttl=30)
        assert await p.get_agent("m1", "alice") == {"agent_id": "alice", "status": "online", "capacity": 5, "load": 2}
        assert await p.agent_counts("m2") == {"online": 0, "busy": 1, "away": 0}
        assert await p.customer_online("m1", "v_1") and not await p.customer_online("m1", "c_9")
        await p.refresh([("m1", "alice", "offline", 5, 0)], [], "gateway-0", ttl=30)
        assert await p.get_agent("m1", "alice") is None
        clock.t += 31  # the gateway stopped refreshing: its people go offline
        assert await p.get_agent("m2", "zhang") is None and not await p.customer_online("m2", "c_9")
    run(body, redis_url, prefix, clock)
