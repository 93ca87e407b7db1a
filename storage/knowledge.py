"""Each merchant's bot knowledge base in Redis: `{p}m:{m}:kb` (hash: entry id -> entry JSON)
and `{p}m:{m}:kb:version` (bumped by every change, so bot workers know to rebuild their index).

Every change is an audit event written into the outbox in the same MULTI/EXEC, like every
other tenant record (storage/records.py). Entries are validated by actors/bot/kb.py before
they get here.
"""
from __future__ import annotations

import time
from typing import Callable

import orjson
import redis.asyncio as aioredis

from storage.records import audit


class KnowledgeStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "pd:", clock: Callable[[], float] = time.time,
                 shard: int = 0):
        self.r, self.p, self.clock, self.shard = redis, prefix, clock, shard

    def _key(self, merchant: str) -> str:
        return kb_key(self.p, merchant)

    async def list(self, merchant: str) -> list[dict]:
        raw = await self.r.hgetall(self._key(merchant))
        return sorted((orjson.loads(v) for v in raw.values()), key=lambda e: e["id"])

    async def get(self, merchant: str, entry_id: str) -> dict | None:
        raw = await self.r.hget(self._key(merchant), entry_id)
        return orjson.loads(raw) if raw else None

    async def count(self, merchant: str) -> int:
        return int(await self.r.hlen(self._key(merchant)))

    async def version(self, merchant: str) -> int:
        return int(await self.r.get(self._key(merchant) + ":version") or 0)

    async def put(self, merchant: str, entry: dict, actor: str) -> bool:
        """Create or replace one entry; True if it was new."""
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(merchant), entry["id"], orjson.dumps(entry))
            pipe.incr(self._key(merchant) + ":version")
            self._audit(pipe, merchant, "audit.kb.saved", actor, {"id": entry["id"], "question": entry["question"]})
            created, _ = (await pipe.execute())[:2]
        return bool(created)

    async def delete(self, merchant: str, entry_id: str, actor: str) -> bool:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hdel(self._key(merchant), entry_id)
            pipe.incr(self._key(merchant) + ":version")
            self._audit(pipe, merchant, "audit.kb.deleted", actor, {"id": entry_id})
            deleted = (await pipe.execute())[0]
        return bool(deleted)

    async def import_entries(self, merchant: str, entries: list[dict], replace: bool, actor: str) -> dict:
        """All or nothing: `replace` drops entries the import does not have; otherwise the
        import adds and overwrites by id."""
        key = self._key(merchant)
        async with self.r.pipeline(transaction=True) as pipe:
            if replace:
                pipe.delete(key)
            if entries:
                pipe.hset(key, mapping={e["id"]: orjson.dumps(e) for e in entries})
            pipe.incr(key + ":version")
            pipe.hlen(key)
            at = len(pipe.command_stack) - 1
            self._audit(pipe, merchant, "audit.kb.imported", actor, {"entries": len(entries), "replace": replace})
            results = await pipe.execute()
        return {"imported": len(entries), "total": int(results[at]), "replaced": replace}

    def _audit(self, pipe, merchant: str, type_: str, actor: str, changes: dict) -> None:
        audit(pipe, self.p, self.shard, merchant, type_, actor, "kb", changes, int(self.clock() * 1000))


def kb_key(prefix: str, merchant: str) -> str:
    return f"{prefix}m:{merchant}:kb"


def load_sync(r, prefix: str, merchant: str) -> tuple[int, list[dict], dict]:
    """For bot workers (sync Redis): (kb version, entries, the merchant's bot settings)."""
    key = kb_key(prefix, merchant)
    with r.pipeline(transaction=True) as pipe:
        pipe.get(key + ":version")
        pipe.hgetall(key)
        pipe.get(f"{prefix}merchant:{merchant}")
        version, raw, merchant_raw = pipe.execute()
    settings = (orjson.loads(merchant_raw).get("settings") or {}) if merchant_raw else {}
    return int(version or 0), [orjson.loads(v) for v in raw.values()], settings.get("bot") or {}


def version_sync(r, prefix: str, merchant: str) -> tuple[int, bytes | None]:
    """(kb version, the merchant record's raw JSON): what a worker checks before each batch."""
    key = kb_key(prefix, merchant)
    with r.pipeline(transaction=False) as pipe:
        pipe.get(key + ":version")
        pipe.get(f"{prefix}merchant:{merchant}")
        version, merchant_raw = pipe.execute()
    return int(version or 0), merchant_raw
