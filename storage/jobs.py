"""Durable side effects: jobs queued in the same MULTI/EXEC as the change that causes them
(a ticket saved → its webhook and the customer's chat notice), run at least once by the
gateways, retried with back-off, and kept for a human when they keep failing.

Keys under the prefix:
- `{p}jobs` — a stream, consumer group "dispatch"; field `j` holds the job (JSON: `kind`,
  `merchant`, `id` (unique, the receivers' dedupe key), `attempt`, and the kind's fields);
- `{p}jobs:retry` — a sorted set of jobs waiting for their next attempt, scored by its time (ms);
- `{p}jobs:dead` — a list of jobs that failed `MAX_ATTEMPTS` times, with their last error.

A gateway that dies mid-job leaves the entry pending; another claims it after `CLAIM_IDLE_MS`.
Jobs with the same `lane` (a channel's messages) run in order; lanes run side by side. A job
given up calls its kind's `on_dead` hook once (a message never delivered: the agent is told).

A job's own fields (a message's text and its recipient, a webhook's body) and its last error are
sealed with the job merchant's data key (storage/crypto.py): the stored JSON keeps `kind`,
`merchant`, `id`, `attempt` and `lane` readable (what routes and counts it) and holds the rest in
`sealed` (base64). The stream, the retry set and the dead list all hold jobs so; `revive_dead`
moves them as they are. A job stored before sealing existed runs as it is. A job whose
merchant's keys were shredded has nothing left to deliver: it is dropped when it comes up.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

import orjson
import redis.exceptions
from redis.asyncio import Redis

from storage import crypto

log = logging.getLogger(__name__)

GROUP = "dispatch"
MAX_ATTEMPTS = 8
BACKOFF_S = (2, 10, 30, 120, 600, 1800, 3600)
CLAIM_IDLE_MS = 60_000
MAX_DEAD = 10_000

# move due retries back to the stream, atomically: a job is in exactly one of the two places
_REQUEUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, job in ipairs(due) do
  redis.call('ZREM', KEYS[1], job)
  redis.call('XADD', KEYS[2], '*', 'j', job)
end
return #due
"""


# give dead jobs another round (after the receiver is fixed), oldest first; the runner starts
# their attempts again (field `revived`). The job's JSON moves as it is.
_REVIVE = """
local n = 0
while n < tonumber(ARGV[1]) do
  local raw = redis.call('RPOP', KEYS[1])
  if not raw then break end
  redis.call('XADD', KEYS[2], '*', 'j', raw, 'revived', '1')
  n = n + 1
end
return n
"""


def stream(prefix: str) -> str:
    return f"{prefix}jobs"


def retry_key(prefix: str) -> str:
    return f"{prefix}jobs:retry"


def dead_key(prefix: str) -> str:
    return f"{prefix}jobs:dead"


CLEAR = ("kind", "merchant", "id", "attempt", "lane")     # stored readable; every other field sealed
RESERVED = frozenset({"kind", "merchant", "id", "attempt", "error", "sealed"})


def pack(ring: crypto.Keyring, job: dict) -> bytes:
    """The stored JSON of a job: CLEAR fields as they are, the rest sealed for its merchant."""
    head = {k: job[k] for k in CLEAR if k in job}
    rest = orjson.dumps({k: v for k, v in job.items() if k not in CLEAR})
    head["sealed"] = base64.b64encode(ring.seal(job["merchant"], rest)).decode()
    return orjson.dumps(head)


def unpack(ring: crypto.Keyring, raw: bytes | str) -> dict:
    """A stored job with its fields opened (one stored unsealed as it is); raises crypto.Shredded
    when its merchant's keys are gone, crypto.CryptoError when corrupt, ValueError when no job."""
    job = orjson.loads(raw)
    sealed = job.pop("sealed", None)
    if sealed is None:
        return job
    return {**job, **orjson.loads(ring.open(job["merchant"], base64.b64decode(sealed)))}


def enqueue(pipe: Any, prefix: str, kind: str, merchant: str, /, **fields: Any) -> str:
    """Queue a job on `pipe` (inside the caller's MULTI); returns its id."""
    reserved = RESERVED & fields.keys()
    if reserved:
        raise ValueError(f"job fields may not be named {sorted(reserved)}")
    job_id = uuid.uuid4().hex
    job = {"kind": kind, "merchant": merchant, "id": job_id, "attempt": 0, **fields}
    pipe.xadd(stream(prefix), {"j": pack(crypto.keyring(pipe, prefix), job)})
    return job_id


Handler = Callable[[dict], Awaitable[None]]


class Dispatcher:
    """Runs jobs: `handlers[kind](job)` succeeds or raises (a retry later). One per gateway."""

    def __init__(self, redis: Redis, prefix: str, consumer: str, handlers: dict[str, Handler],
                 clock: Callable[[], float] = time.time, block_ms: int = 1000,
                 on_dead: dict[str, Handler] | None = None):
        self.r, self.p, self.consumer, self.handlers = redis, prefix, consumer, handlers
        self.on_dead = on_dead or {}   # kind -> called once when a job is given up (tell someone)
        self.clock, self.block_ms = clock, block_ms
        self.done = self.failed = 0

    @property
    def ring(self) -> crypto.Keyring:
        return crypto.keyring(self.r, self.p)

    async def ensure_group(self) -> None:
        try:
            await self.r.xgroup_create(stream(self.p), GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self) -> None:
        await self.ensure_group()
        while True:
            try:
                await self.step()
            except Exception:  # Redis away: try again shortly
                log.exception("job dispatch failed")
                await asyncio.sleep(1.0)

    async def step(self) -> int:
        """Requeue due retries, claim abandoned jobs, run what arrives; how many ran."""
        await self.r.eval(_REQUEUE, 2, retry_key(self.p), stream(self.p), int(self.clock() * 1000), 100)
        claimed = await self.r.xautoclaim(stream(self.p), GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=50)
        entries = list(claimed[1]) if claimed and len(claimed) > 1 else []
        reply = await self.r.xreadgroup(GROUP, self.consumer, {stream(self.p): ">"}, count=50, block=self.block_ms)
        for _, items in reply or []:
            entries.extend(items)
        lanes: dict[str, list] = {}
        for entry_id, fields in entries:
            if fields:  # a deleted entry claimed again comes back empty
                lanes.setdefault(_lane(fields), []).append((entry_id, fields))
            else:
                await self.r.xack(stream(self.p), GROUP, entry_id)
        await asyncio.gather(*(self._run_lane(lane) for lane in lanes.values()))
        return len(entries)

    async def _run_lane(self, lane: list) -> None:
        """A lane's jobs in order (one channel's messages); lanes side by side, so a platform
        that is slow or down holds up only its own."""
        for entry_id, fields in lane:
            await self._run_one(entry_id, fields)

    async def _run_one(self, entry_id, fields: dict) -> None:
        raw = fields.get(b"j") or fields.get("j")
        try:
            job = unpack(self.ring, raw)
            handler = self.handlers[job["kind"]]
            if fields.get(b"revived") or fields.get("revived"):
                job = {**job, "attempt": 0}
        except crypto.Shredded:   # its merchant's data is gone: nothing left to deliver
            log.info("job dropped: its merchant's keys were shredded")
            await self._settle(entry_id)
            return
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, crypto.CryptoError) as exc:
            await self._settle(entry_id, dead={"raw": repr(raw)[:2000], "error": f"undecodable job: {exc!r}"})
            return
        try:
            await handler(job)
        except Exception as exc:  # noqa: BLE001 — any failure is retried, then kept for a human
            self.failed += 1
            attempt = int(job.get("attempt", 0)) + 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("job %s %s (merchant %s) attempt %d failed: %s", job["kind"], job["id"], job["merchant"],
                        attempt, error)
            job = {**job, "attempt": attempt, "error": error}
            if attempt >= MAX_ATTEMPTS:
                await self._gave_up(job)
                await self._settle(entry_id, dead=job)
            else:
                due = self.clock() + BACKOFF_S[min(attempt, len(BACKOFF_S)) - 1]
                await self._settle(entry_id, retry=(job, due))
            return
        self.done += 1
        await self._settle(entry_id)

    async def _gave_up(self, job: dict) -> None:
        hook = self.on_dead.get(job["kind"])
        if hook is not None:
            try:
                await hook(job)
            except Exception:  # noqa: BLE001 — the job is kept in the dead list either way
                log.exception("job %s %s: the give-up hook failed", job["kind"], job["id"])

    async def _settle(self, entry_id, retry: tuple[dict, float] | None = None, dead: dict | None = None) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(stream(self.p), GROUP, entry_id)
        pipe.xdel(stream(self.p), entry_id)
        kept = self._stored(retry[0] if retry is not None else dead)
        if retry is not None and kept is not None:
            pipe.zadd(retry_key(self.p), {kept: int(retry[1] * 1000)})
        if dead is not None and kept is not None:
            pipe.lpush(dead_key(self.p), kept)
            pipe.ltrim(dead_key(self.p), 0, MAX_DEAD - 1)
        await pipe.execute()

    def _stored(self, job: dict | None) -> bytes | None:
        """A job kept for later, sealed (an undecodable one as it came); None when there is none
        or its merchant's keys were shredded meanwhile."""
        if job is None:
            return None
        if "merchant" not in job:
            return orjson.dumps(job)
        try:
            return pack(self.ring, job)
        except crypto.Shredded:
            return None


def _lane(fields: dict) -> str:
    try:   # `lane` and `kind` are stored readable: no need to open the job
        job = orjson.loads(fields.get(b"j") or fields.get("j"))
        return str(job.get("lane") or job.get("kind"))
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        return ""


async def dead_jobs(r: Redis, prefix: str, limit: int = 100) -> list[dict]:
    """The jobs given up on, newest first, opened (with their last `error`); a shredded
    merchant's as they are stored."""
    ring = crypto.keyring(r, prefix)
    return [_readable(ring, raw) for raw in await r.lrange(dead_key(prefix), 0, limit - 1)]


def _readable(ring: crypto.Keyring, raw: bytes) -> dict:
    try:
        return unpack(ring, raw)
    except crypto.CryptoError:     # shredded or corrupt: what is readable of it
        return orjson.loads(raw)
    except (ValueError, KeyError, TypeError):
        return {"raw": repr(raw)[:2000]}


async def revive_dead(r: Redis, prefix: str, limit: int = 10_000) -> int:
    """Run dead jobs again (an operator fixed the receiver); how many were queued."""
    return int(await r.eval(_REVIVE, 2, dead_key(prefix), stream(prefix), limit))


async def pending(r: Redis, prefix: str) -> dict:
    """Jobs queued, waiting for a retry, and given up on (for /metrics and the CLI)."""
    pipe = r.pipeline(transaction=False)
    pipe.xlen(stream(prefix))
    pipe.zcard(retry_key(prefix))
    pipe.llen(dead_key(prefix))
    queued, retrying, dead = await pipe.execute()
    return {"queued": queued, "retrying": retrying, "dead": dead}

