"""Redis side of an actor host: the activation directory, snapshots, the commit of a round.

Keys (every actor key carries its merchant):
- `{p}m:{merchant}:dir` — hash `kind:id` -> host id: where the actor is active now.
- `{p}m:{merchant}:snap:{kind}:{id}` — msgpack [state, meta] of the actor.
- `{p}host:{host}:pending` — stream of envelopes this host's actors sent to other hosts,
  committed with the round that produced them and deleted once the receiver acknowledged.
- `{p}placement` — the placement table (JSON).

Values that can hold what customers and agents wrote (snapshots, logs, pending envelopes) are
sealed with the merchant's data key (storage/crypto.py; pending envelopes with the cluster's).

A round's commit is one MULTI/EXEC: events into the outbox, snapshots, directory releases and
pending outgoing envelopes are durable together or not at all. That is what makes re-sending
after a crash safe: state (with its per-origin watermarks) and events never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import functools

import msgpack
import orjson
import redis.asyncio as aioredis
import redis.exceptions as rexc

from storage import crypto, jobs, outbox
from storage.events import Event

# Claim actors for a host, all of a round's in one call. The current holder keeps an actor
# while its heartbeat lives; a holder whose heartbeat expired (dead host) loses it.
# KEYS: the merchants' directory hashes, one per actor. ARGV: me, heartbeat key prefix, then
# per actor its field and may_claim ('1'/'0'). Returns each actor's holder ('' for none).
_CLAIM = """
local me, hb, out = ARGV[1], ARGV[2], {}
for i = 1, #KEYS do
  local field, may = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  local cur = redis.call('HGET', KEYS[i], field)
  if cur == me or (cur and redis.call('EXISTS', hb .. cur) == 1) then
    out[i] = cur
  elseif may == '1' then
    redis.call('HSET', KEYS[i], field, me)
    out[i] = me
  else
    out[i] = ''
  end
end
return out
"""


# An actor's log (a conversation's messages, by sequence number) lives this long after its last
# append: long enough for any client to come back and resume; history after that is ClickHouse.
LOG_TTL_S = 7 * 24 * 3600


async def read_log(r: aioredis.Redis, prefix: str, merchant: str, key: str, after: int,
                   count: int = 1000) -> list[tuple[int, dict]]:
    """Entries with seq > after, in order; none once the merchant's keys were shredded."""
    entries = await r.xrange(key, min=f"{after + 1}-0", max="+", count=count)
    ring = crypto.keyring(r, prefix)
    try:
        return [(int(eid.split(b"-")[0]), msgpack.unpackb(ring.open(merchant, f[b"b"]))) for eid, f in entries]
    except crypto.Shredded:
        return []


def open_snapshot(ring: crypto.Keyring, merchant: str, blob: bytes | None) -> tuple | None:
    """(state, meta) of a stored snapshot; None if there is none, or its merchant's keys were shredded."""
    if not blob:
        return None
    try:
        return tuple(msgpack.unpackb(ring.open(merchant, blob)))
    except crypto.Shredded:
        return None


class StoreUnavailable(Exception):
    """Redis could not be reached; nothing of the call is known to have happened, and the
    same call may be retried unchanged."""


def _unavailable_as_store_error(fn):
    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
    return wrapper


@dataclass
class RoundCommit:
    events: list[Event] = field(default_factory=list)
    snapshots: dict[tuple[str, str, str], bytes] = field(default_factory=dict)  # (kind, merchant, id)
    releases: list[tuple[str, str, str]] = field(default_factory=list)
    outgoing: list[list] = field(default_factory=list)  # envelopes on the wire format
    pushes: list[tuple[str, dict]] = field(default_factory=list)  # sent after the commit, not stored
    logs: list[tuple[str, str, str, int, dict]] = field(default_factory=list)  # (kind, merchant, id, seq, record)
    jobs: list[tuple[str, str, dict]] = field(default_factory=list)  # (kind, merchant, fields): storage/jobs.py
    entry: bytes | None = None  # the pending-outgoing stream entry, once committed

    def empty(self) -> bool:
        return not (self.events or self.snapshots or self.releases or self.outgoing or self.logs or self.jobs)


class ActorStore:
    def __init__(self, redis: aioredis.Redis, prefix: str = "pd:", host_id: str = "", shard: int = 0):
        self.r = redis
        self.p = prefix
        self.host_id = host_id
        self.shard = shard
        self._claim = redis.register_script(_CLAIM)
        self.ring = crypto.keyring(redis, prefix)

    def _dir(self, merchant: str) -> str:
        return f"{self.p}m:{merchant}:dir"

    def _snap(self, kind: str, merchant: str, id_: str) -> str:
        return snapshot_key(self.p, kind, merchant, id_)

    @property
    def pending_key(self) -> str:
        return f"{self.p}host:{self.host_id}:pending"

    @_unavailable_as_store_error
    async def claim(self, refs: list[tuple[str, str, str]], may_claim: list[bool]) -> list[tuple[str, tuple | None]]:
        """For each (kind, merchant, id): (its holder, or '' if nobody may hold it; snapshot).
        Two commands whatever the number of actors: redis-py spends ~20 us per command."""
        args = [self.host_id, f"{self.p}hb:host:"]
        for (kind, _, id_), may in zip(refs, may_claim):
            args += [f"{kind}:{id_}", "1" if may else "0"]
        pipe = self.r.pipeline(transaction=False)
        await self._claim(keys=[self._dir(m) for _, m, _ in refs], args=args, client=pipe)
        pipe.mget([self._snap(*ref) for ref in refs])
        owners, snaps = await pipe.execute()
        return [(o.decode() if isinstance(o, bytes) else (o or ""), open_snapshot(self.ring, m, b))
                for o, b, (_, m, _) in zip(owners, snaps, refs)]

    @_unavailable_as_store_error
    async def commit(self, c: RoundCommit, round_id: str, retry: bool = False) -> None:
        """Make a round durable; sets `c.entry` to its pending-outgoing entry id, if any.

        `round_id` is written in the same transaction: when a commit is retried because the
        connection broke, the EXEC may have been applied already — then the marker says so and
        the round is not written twice (events would be duplicated in the outbox)."""
        marker = f"{self.p}host:{self.host_id}:round"
        sealed = self._sealed(c)   # before anything is sent: a merchant without keys yet gets them first
        if retry and (await self.r.get(marker) or b"").decode() == round_id:
            c.entry = await self._last_pending_entry() if c.outgoing else None
            return
        pipe = self.r.pipeline(transaction=True)
        pipe.set(marker, round_id)
        if c.events:
            outbox.append(pipe, self.p, self.shard, c.events)
        if c.snapshots:
            pipe.mset({self._snap(*ref): blob for ref, blob in sealed["snapshots"].items()})
        by_merchant: dict[str, list[str]] = {}
        for kind, merchant, id_ in c.releases:
            by_merchant.setdefault(merchant, []).append(f"{kind}:{id_}")
        for merchant, fields in by_merchant.items():
            pipe.hdel(self._dir(merchant), *fields)
        for key in self._append_logs(pipe, sealed["logs"]):
            pipe.expire(key, LOG_TTL_S)
        for kind, merchant, fields in c.jobs:
            jobs.enqueue(pipe, self.p, kind, merchant, **fields)
        if c.outgoing:   # last: its entry id is the reply's last element
            pipe.xadd(self.pending_key, {"b": sealed["outgoing"]})
        res = await pipe.execute()
        c.entry = res[-1] if c.outgoing else None

    def _sealed(self, c: RoundCommit) -> dict:
        seal = self.ring.seal
        return {"snapshots": {ref: seal(ref[1], blob) for ref, blob in c.snapshots.items()},
                "logs": [(kind, m, id_, seq, seal(m, msgpack.packb(record))) for kind, m, id_, seq, record in c.logs],
                "outgoing": seal(crypto.SYSTEM, msgpack.packb(c.outgoing)) if c.outgoing else b""}

    def log_key(self, kind: str, merchant: str, id_: str) -> str:
        return f"{self.p}m:{merchant}:log:{kind}:{id_}"

    def _append_logs(self, pipe, logs) -> set[str]:
        keys = set()
        for kind, merchant, id_, seq, sealed in logs:
            key = self.log_key(kind, merchant, id_)
            pipe.xadd(key, {"b": sealed}, id=f"{seq}-0")
            keys.add(key)
        return keys

    async def _last_pending_entry(self) -> bytes | None:
        last = await self.r.xrevrange(self.pending_key, count=1)
        return last[0][0] if last else None

    @_unavailable_as_store_error
    async def pending(self) -> list[tuple[bytes, list]]:
        """Outgoing envelopes committed but not yet acknowledged by their receivers."""
        entries = await self.r.xrange(self.pending_key)
        return [(eid, msgpack.unpackb(self.ring.open(crypto.SYSTEM, fields[b"b"]))) for eid, fields in entries]

    @_unavailable_as_store_error
    async def delivered(self, entry_ids: list[bytes]) -> None:
        if entry_ids:
            await self.r.xdel(self.pending_key, *entry_ids)

    @_unavailable_as_store_error
    async def load_placement(self) -> dict | None:
        raw = await self.r.get(f"{self.p}placement")
        return orjson.loads(raw) if raw else None


def snapshot_key(prefix: str, kind: str, merchant: str, id_: str) -> str:
    return f"{prefix}m:{merchant}:snap:{kind}:{id_}"


async def read_states(r: aioredis.Redis, prefix: str, kind: str, merchant: str, ids: list[str]) -> list[dict | None]:
    """The last committed state of each actor (None if it never had one), in one round trip:
    what read-only views (the supervisor's live view) show without waking an actor."""
    raws = await r.mget([snapshot_key(prefix, kind, merchant, i) for i in ids]) if ids else []
    ring = crypto.keyring(r, prefix)
    return [(snap or (None,))[0] for snap in (open_snapshot(ring, merchant, raw) for raw in raws)]


def pack_snapshot(state: dict, meta: dict) -> bytes:
    return msgpack.packb([state, meta])


async def save_placement(r: aioredis.Redis, prefix: str, table: dict) -> None:
    await r.set(f"{prefix}placement", orjson.dumps(table))
