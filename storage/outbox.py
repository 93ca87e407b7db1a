"""The durable event outbox: Redis streams between actor hosts and ClickHouse writers.

Layout, under a key prefix (default "pd:"):
- `{prefix}outbox:{shard}` — a stream per shard; each entry is one host round's events,
  fields `b` (msgpack of [event.to_wire(), ...], payloads sealed field by field with the
  merchant's key: storage/crypto.py) and `n` (how many events).
- `{prefix}outbox:backlog` — a counter of events appended and not yet stored in ClickHouse.
- `{prefix}outbox:dead` — entries a writer could not decode, kept for a human (never dropped).

Delivery: a host appends inside the MULTI/EXEC that also writes its actors' snapshots, so an
event is in the outbox exactly when its state change is durable. Writers (consumer group
"writers") read entries, store them in ClickHouse, then acknowledge, delete and decrement the
backlog atomically (storage.writer) — at-least-once into a sink that is idempotent by id.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import msgpack
import redis.exceptions
from redis.asyncio import Redis as AsyncRedis

from storage import crypto
from storage.events import Event

GROUP = "writers"
# The form new_event_id() makes and ClickHouse's toString(UUID) returns: ids compare as strings
# when a writer checks which of a batch are stored, so other spellings of a UUID are refused.
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_STRING_FIELDS = ("merchant_id", "type", "actor_key", "session_id", "channel", "agent_id",
                  "customer_id", "group_id")


def stream_key(prefix: str, shard: int) -> str:
    return f"{prefix}outbox:{shard}"


def backlog_key(prefix: str) -> str:
    return f"{prefix}outbox:backlog"


def dead_key(prefix: str) -> str:
    return f"{prefix}outbox:dead"


def encode_batch(events: Sequence[Event], ring: "crypto.Keyring | None" = None) -> bytes:
    """The outbox entry of `events`; with `ring`, each payload sealed with its merchant's key
    (storage/crypto.py: what reports read stays clear, what people wrote does not)."""
    wires = [e.to_wire() for e in events]
    if ring is not None:
        for wire in wires:
            if wire["m"] and wire["p"]:
                wire["p"] = ring.seal_payload(wire["m"], wire["p"])
    return msgpack.packb(wires, use_bin_type=True)


def decode_batch(data: bytes) -> list[Event]:
    """The events of one outbox entry. Raises ValueError if the entry is not a list of valid
    version-1 events: a writer must not send ClickHouse a batch it would refuse forever."""
    try:
        wires = msgpack.unpackb(data, raw=False)
        events = [Event.from_wire(w) for w in wires]
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable outbox entry: {type(exc).__name__}: {exc}") from exc
    for event in events:
        check_event(event)
    return events


def check_event(event: Event) -> None:
    """Raise ValueError naming the field if `event` does not fit the events table."""
    if not isinstance(event.event_id, str) or not CANONICAL_UUID.fullmatch(event.event_id):
        raise ValueError(f"event_id {event.event_id!r} is not a lowercase canonical UUID")
    for name in _STRING_FIELDS:
        if not isinstance(getattr(event, name), str):
            raise ValueError(f"event {event.event_id}: {name} must be a string, got {getattr(event, name)!r}")
    for name in ("seq", "ts"):
        value = getattr(event, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
            raise ValueError(f"event {event.event_id}: {name} must be a non-negative integer, got {value!r}")
    if not isinstance(event.payload, dict):
        raise ValueError(f"event {event.event_id}: payload must be a map, got {type(event.payload).__name__}")


def append(pipe: Any, prefix: str, shard: int, events: Sequence[Event]) -> None:
    """Queue the outbox writes for `events` on `pipe` (a sync or asyncio redis pipeline);
    the caller executes it, normally inside the MULTI/EXEC holding its own writes. Nothing
    is queued for no events. Never trimmed: entries leave only when a writer stored them."""
    if not events:
        return
    pipe.xadd(stream_key(prefix, shard), {"b": encode_batch(events, crypto.keyring(pipe, prefix)), "n": len(events)})
    pipe.incrby(backlog_key(prefix), len(events))


async def ensure_groups(r: AsyncRedis, prefix: str, shards: Iterable[int]) -> None:
    """Create the "writers" group on each shard's stream (and the stream) if missing.
    From id 0: entries appended before any writer existed are read too."""
    for shard in shards:
        try:
            await r.xgroup_create(stream_key(prefix, shard), GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


async def backlog(r: AsyncRedis, prefix: str) -> dict[str, Any]:
    """What waits for ClickHouse: {"events": total events not yet stored, "entries": {shard:
    stream entries}, "pending": {shard: entries read by a writer, not yet acknowledged}}.
    Shard keys are strings, so the report serializes to JSON as it is."""
    raw = await r.get(backlog_key(prefix))
    report: dict[str, Any] = {"events": int(raw or 0), "entries": {}, "pending": {}}
    for shard in await _shards(r, prefix):
        key = stream_key(prefix, shard)
        report["entries"][str(shard)] = await r.xlen(key)
        report["pending"][str(shard)] = await _pending_count(r, key)
    return report


async def _shards(r: AsyncRedis, prefix: str) -> list[int]:
    pattern = _glob_escape(f"{prefix}outbox:") + "*"
    found = set()
    async for key in r.scan_iter(match=pattern, count=1000, _type="stream"):
        tail = (key.decode() if isinstance(key, bytes) else key)[len(f"{prefix}outbox:"):]
        if tail.isdigit():
            found.add(int(tail))
    return sorted(found)


async def _pending_count(r: AsyncRedis, key: str) -> int:
    try:
        summary = await r.xpending(key, GROUP)
    except redis.exceptions.ResponseError:  # NOGROUP: no writer has started on this shard
        return 0
    return int(summary["pending"])


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# --- the reading side (storage.writer) -------------------------------------------------------

@dataclass
class Entry:
    """One outbox entry as read by a writer. `events` is None when the entry could not be
    decoded (`error` says why); such an entry goes to the dead-letter stream."""

    stream: str
    id: str
    count: int
    events: list[Event] | None
    raw: dict = field(default_factory=dict, repr=False)
    error: str = ""


def parse_entry(stream: str, entry_id: str, fields: dict | None) -> Entry:
    if not fields:  # the entry was deleted while pending: nothing left to store or count
        return Entry(stream, entry_id, 0, [], error="entry vanished from the stream")
    raw_n = fields.get(b"n", b"0")
    count = int(raw_n) if raw_n.isdigit() else 0
    try:
        return Entry(stream, entry_id, count, decode_batch(fields.get(b"b", b"")), raw=fields)
    except ValueError as exc:
        return Entry(stream, entry_id, count, None, raw=fields, error=str(exc))


async def read(r: AsyncRedis, consumer: str, cursors: dict[str, str], count: int,
               block_ms: int | None = None) -> list[Entry]:
    """XREADGROUP from each stream in `cursors` ({stream: ">" for new entries, or an id to
    re-read this consumer's pending entries after it}). Advances the id cursors in place."""
    reply = await r.xreadgroup(GROUP, consumer, cursors, count=count, block=block_ms)
    entries = []
    for stream, items in _stream_items(reply):
        for entry_id, fields in items:
            entry_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            entries.append(parse_entry(stream, entry_id, fields))
            if cursors[stream] != ">":
                cursors[stream] = entry_id
    return entries


def _stream_items(reply: Any) -> list[tuple[str, list]]:
    """XREADGROUP's RESP2 reply as [(stream, [(id, fields), ...])] (writers use RESP2)."""
    return [(s.decode() if isinstance(s, bytes) else s, items) for s, items in (reply or [])]


async def claim_idle(r: AsyncRedis, consumer: str, streams: Iterable[str], min_idle_ms: int) -> int:
    """Take over entries another consumer read and has not acknowledged for `min_idle_ms`
    (a writer that died, or whose shards were reassigned); they become this consumer's
    pending entries. Returns how many were claimed."""
    claimed = 0
    for stream in streams:
        start = "0-0"
        while True:
            reply = await r.xautoclaim(stream, GROUP, consumer, min_idle_ms, start_id=start, count=1000)
            claimed += len(reply[1])
            start = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            if start == "0-0":
                break
    return claimed


# One script, not MULTI: a retried acknowledgement (the reply was lost) must not decrement
# the backlog twice, so each entry counts only if XACK actually removed it from the pending
# list. KEYS = backlog, then one stream key per entry; ARGV = group, then (id, count) pairs.
_ACK_SCRIPT = """
local total = 0
for i = 2, #KEYS do
  local id = ARGV[2 * (i - 1)]
  if redis.call('XACK', KEYS[i], ARGV[1], id) == 1 then
    total = total + tonumber(ARGV[2 * (i - 1) + 1])
  end
  redis.call('XDEL', KEYS[i], id)
end
if total > 0 then redis.call('DECRBY', KEYS[1], total) end
return total
"""


async def acknowledge(r: AsyncRedis, prefix: str, entries: Sequence[Entry]) -> int:
    """Acknowledge and delete `entries`, and take their events off the backlog, atomically
    and idempotently. Undecodable entries are copied to the dead-letter stream first.
    Returns the events taken off the backlog."""
    dead = [e for e in entries if e.events is None]
    if dead:
        pipe = r.pipeline(transaction=True)
        for e in dead:
            pipe.xadd(dead_key(prefix), {**e.raw, b"stream": e.stream, b"id": e.id, b"error": e.error})
        await pipe.execute()
    if not entries:
        return 0
    keys = [backlog_key(prefix)] + [e.stream for e in entries]
    args: list[Any] = [GROUP]
    for e in entries:
        args += [e.id, e.count]
    return int(await r.eval(_ACK_SCRIPT, len(keys), *keys, *args))
