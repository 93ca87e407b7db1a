"""Plain helpers for storage tests (fixtures live in tests.storage_fixtures)."""
from __future__ import annotations

import asyncio

from storage.events import Event


def make_events(n: int, merchant: str = "m1", session: str = "s1", ts0: int = 1_763_856_000_000,
                text: str = "你好, where is my order?") -> list[Event]:
    """`n` message events of one session, 1 ms apart, every analytic column filled."""
    return [
        Event(merchant_id=merchant, type="message.sent", actor_key=f"session:{merchant}:{session}",
              seq=i + 1, session_id=session, channel="web", agent_id="a1", customer_id="c1",
              group_id="g1", payload={"text": f"{text} #{i}", "lang": "zh-en"}, ts=ts0 + i)
        for i in range(n)
    ]


def run(coro, timeout: float = 60.0):
    """Run one async scenario to completion (the suite has no async test plugin)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def opened(events, client, prefix: str):
    """`events` as they were emitted: payloads opened with their merchants' keys (the outbox and
    ClickHouse hold them sealed, storage/crypto.py). `client`: any redis client of the cluster."""
    import dataclasses

    from storage import crypto

    ring = crypto.keyring(client, prefix)
    return [dataclasses.replace(e, payload=ring.open_payload(e.merchant_id, e.payload)) if e.merchant_id else e
            for e in events]


def opened_payload(redis_url: str, prefix: str, merchant: str, payload: str) -> dict:
    """A payload as ClickHouse stores it (JSON, personal fields sealed), opened."""
    import orjson
    import redis

    from storage import crypto

    return crypto.keyring(redis.Redis.from_url(redis_url), prefix).open_payload(merchant, orjson.loads(payload))


async def stored_bytes(r, prefix: str) -> dict[bytes, list[bytes]]:
    """Every key under `prefix` (an asyncio client's Redis) and every byte string it holds, whatever
    its type: what a raw dump of Redis would show."""
    found = {}
    async for key in r.scan_iter(match=f"{prefix}*", count=1000):
        kind = (await r.type(key)).decode()
        if kind == "string":
            values = [await r.get(key)]
        elif kind == "hash":
            values = [b for kv in (await r.hgetall(key)).items() for b in kv]
        elif kind == "stream":
            values = [b for _, fields in await r.xrange(key) for kv in fields.items() for b in kv]
        elif kind == "list":
            values = await r.lrange(key, 0, -1)
        elif kind == "set":
            values = list(await r.smembers(key))
        elif kind == "zset":
            values = await r.zrange(key, 0, -1)
        else:
            values = []
        found[key] = values
    return found
