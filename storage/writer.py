"""`OutboxWriter`: moves events from the Redis outbox into the event sink (ClickHouse).

A plain class; storage.writer_service wraps it in a Ray actor. One writer owns a set of
outbox shards and is the only consumer of their entries, so it never races itself.

The loop, until `stop()`:
1. Re-read this writer's own pending entries (read before a crash or a failed
   acknowledgement) and store them as possible redeliveries: the sink drops ids it has.
2. Read new entries across its shards (XREADGROUP BLOCK), up to `max_batch_events` events.
3. Store the batch with ONE sink call on the writer's single worker thread (chDB is
   synchronous and must never block the event loop; one thread also keeps chDB's one
   engine per process to one user). While the sink is unavailable, the same batch is
   retried with capped exponential backoff and nothing new is read: the outbox grows in
   Redis and drains when the sink is back.
4. Acknowledge: XACK + XDEL + backlog decrement in one atomic, idempotent script.
Any other failure (Redis down) is logged at the loop's boundary, and the loop starts over at
step 1 after a pause: entries read but not acknowledged are still pending, so none is lost.

Pausing (for `peakdesk backup`, storage.backup): before each turn the writer reads the flag
`{prefix}writers:pause`. While it is set the writer reads, stores and acknowledges nothing, and
says so by setting `{prefix}writers:paused:{name}` to the flag's value (a token naming who
paused it): since it checks only between turns, that key means "no batch of mine is in
flight, and ClickHouse will get nothing from me until the flag goes". When the flag is gone it
re-creates missing consumer groups and re-reads its own pending entries first (a restore may
have replaced the streams meanwhile), then carries on.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import orjson
import redis.asyncio as aioredis

from storage import outbox
from storage.events import Event, EventSink, SinkUnavailable

log = logging.getLogger(__name__)

SinkFactory = Callable[[], EventSink]

PAUSE_POLL_S = 0.1        # how often a paused writer looks at the flag again
PAUSED_TTL_MS = 5_000     # a paused writer's confirmation lapses this long after it stops renewing it


def pause_key(prefix: str) -> str:
    """Set (to a token) by whoever needs ClickHouse to stand still; see the module's doc."""
    return f"{prefix}writers:pause"


def paused_key(prefix: str, name: str) -> str:
    """Set by writer `name` to the pause flag's token while it honours it."""
    return f"{prefix}writers:paused:{name}"


@dataclass
class Batch:
    entries: list[outbox.Entry]
    redelivery: bool  # read from the pending list: its events may be stored already

    @property
    def events(self) -> list[Event]:
        return [ev for e in self.entries if e.events for ev in e.events]


@dataclass(frozen=True)
class WriterOptions:
    """Tuning of one writer; every value is checked here, errors name the key and the value."""

    max_batch_events: int = 5000  # events per sink insert (a batch may pass it by one read)
    block_ms: int = 1000          # XREADGROUP BLOCK; also bounds how long stop() takes
    read_count: int = 500         # entries per XREADGROUP per stream
    # After the first entries of a batch, wait this long for more: a chDB insert costs ~10 ms
    # and makes a part whatever its size, so at a few hundred events/s inserting each read
    # alone kept the writer's core 40-50 % busy (py-spy); events reach ClickHouse this much later.
    linger_ms: int = 200
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    heartbeat_s: float = 2.0
    heartbeat_ttl_s: float = 10.0  # five beats: a writer is "down" only after missing several
    claim_idle_ms: int | None = 60_000  # at start, take over entries idle this long; None: never

    def __post_init__(self) -> None:
        for key, value in vars(self).items():
            if key != "claim_idle_ms" and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"writer option {key} must be a positive number, got {value!r}")
        claim = self.claim_idle_ms
        if claim is not None and not (isinstance(claim, int) and claim >= 0):
            raise ValueError(f"writer option claim_idle_ms must be an int >= 0 or None, got {claim!r}")


class OutboxWriter:
    def __init__(self, redis_url: str, sink: SinkFactory | str, shards: list[int], *,
                 database: str = "peakdesk", prefix: str = "pd:", name: str = "writer-0", **tuning: Any):
        """`sink`: a factory returning an EventSink, or a ClickHouse DSN (with `database`).
        The sink is opened lazily, on the worker thread; the writer passes `redelivery=` to its
        insert (as ClickHouseSink takes it). `tuning`: the fields of WriterOptions."""
        if not shards or any(not isinstance(s, int) or s < 0 for s in shards):
            raise ValueError(f"shards must be a non-empty list of non-negative ints, got {shards!r}")
        self.options = WriterOptions(**tuning)
        self.redis_url, self.prefix, self.name = redis_url, prefix, name
        self.shards = sorted(set(shards))
        self.streams = [outbox.stream_key(prefix, s) for s in self.shards]
        self._sink_factory = _factory(sink, database)
        self._sink: EventSink | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-sink")
        self._redis: aioredis.Redis | None = None
        self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        self._pending_done = False
        self._paused = False
        self._failures = 0
        self._stats: dict[str, Any] = {
            "name": name, "shards": self.shards, "state": "idle", "events_written": 0,
            "events_sent": 0, "batches": 0, "redelivered_batches": 0, "dead_entries": 0,
            "retries": 0, "last_error": None, "last_error_at": None, "last_insert_at": None,
        }

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect to Redis and create the consumer groups; `run()` calls it."""
        if self._redis is None:
            self._redis = aioredis.from_url(self.redis_url)
        await outbox.ensure_groups(self._redis, self.prefix, self.shards)
        if self.options.claim_idle_ms is not None:
            claimed = await outbox.claim_idle(self._redis, self.name, self.streams, self.options.claim_idle_ms)
            if claimed:
                log.warning("%s: took over %d unacknowledged outbox entries", self.name, claimed)

    async def run(self) -> None:
        """Move events until `stop()`. Never raises for a sink or Redis outage."""
        heartbeat = asyncio.create_task(self._heartbeats())
        self._set(state="running")
        opened = False
        try:
            while not self._stopping.is_set():
                try:
                    if not opened:
                        await self.open()
                        opened = True
                    await self._step()
                except Exception as exc:  # the supervisor boundary: log, pause, start over
                    log.exception("%s: outbox step failed", self.name)
                    self._pending_done = False  # what was read and not acknowledged is pending
                    self._failed(exc)
                    await self._pause()
        finally:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            self._set(state="stopped")

    def stop(self) -> None:
        """Ask `run()` to return; it does after the current read (at most `block_ms`) or store."""
        self._stopping.set()

    async def close(self) -> None:
        """Release the sink (on its thread), the thread and the Redis connection."""
        if self._sink is not None:
            await self._in_worker(self._sink.close)
            self._sink = None
        self._pool.shutdown(wait=True)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # --- one turn of the loop ------------------------------------------------------------

    async def _step(self) -> None:
        if await self._honour_pause():
            return
        pending = not self._pending_done
        batch = await self.read_batch(pending=pending)
        if pending and not batch.entries:
            self._pending_done = True
            return
        if batch.entries and await self.store(batch):
            await self.acknowledge(batch)

    async def _honour_pause(self) -> bool:
        """True (after a short wait) while the pause flag is set. Called only between turns,
        so whatever this writer read before is stored and acknowledged, or still pending."""
        token = await self._redis.get(pause_key(self.prefix))
        if token is None:
            if self._paused:
                self._paused = False
                # The streams may have been deleted or restored while paused: groups first,
                # then this writer's own pending entries (as redeliveries) before new ones.
                await outbox.ensure_groups(self._redis, self.prefix, self.shards)
                self._pending_done = False
                log.info("%s: resumed", self.name)
                self._set(state="running")
            return False
        if not self._paused:
            self._paused = True
            log.info("%s: paused by %s", self.name, token.decode(errors="replace"))
        if self._stats["state"] != "paused":
            self._set(state="paused")
        await self._redis.set(paused_key(self.prefix, self.name), token, px=PAUSED_TTL_MS)
        try:
            await asyncio.wait_for(self._stopping.wait(), PAUSE_POLL_S)
        except TimeoutError:
            pass
        return True

    async def read_batch(self, pending: bool = False) -> Batch:
        """Entries up to `max_batch_events` events: this writer's pending ones, or new ones
        (waiting up to `block_ms` for the first). A batch may exceed the cap by one read."""
        cursors = {s: ("0" if pending else ">") for s in self.streams}
        entries = await outbox.read(self._redis, self.name, cursors, self.options.read_count,
                                    None if pending else self.options.block_ms)
        if entries and not pending and self.options.linger_ms and \
                sum(e.count for e in entries) < self.options.max_batch_events:
            await asyncio.sleep(self.options.linger_ms / 1000)
        while entries and sum(e.count for e in entries) < self.options.max_batch_events:
            more = await outbox.read(self._redis, self.name, cursors, self.options.read_count)
            if not more:
                break
            entries += more
        return Batch(entries, redelivery=pending)

    async def store(self, batch: Batch) -> bool:
        """Insert the batch's events, retrying while the sink is unavailable. False if the
        writer was stopped first (the entries stay pending for the next start)."""
        redelivery = batch.redelivery
        while True:
            try:
                sent = await self._in_worker(self._insert, batch.events, redelivery)
            except SinkUnavailable as exc:
                log.warning("%s: sink unavailable, keeping %d events: %s", self.name, len(batch.events), exc)
                self._failed(exc)
                redelivery = True  # the failed insert may have landed before the error
                if await self._pause():
                    return False
                continue
            self._stored(batch, sent)
            return True

    async def acknowledge(self, batch: Batch) -> None:
        await outbox.acknowledge(self._redis, self.prefix, batch.entries)
        self._stats["events_written"] += len(batch.events)
        self._stats["dead_entries"] += sum(1 for e in batch.entries if e.events is None)
        for e in batch.entries:
            if e.error:
                log.error("%s: outbox entry %s %s: %s", self.name, e.stream, e.id, e.error)
        self._set()

    # --- the worker thread ---------------------------------------------------------------

    async def _in_worker(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open_sink(self) -> EventSink:
        if self._sink is None:
            self._sink = self._sink_factory()
        return self._sink

    def _insert(self, events: list[Event], redelivery: bool) -> int:
        if not events:
            return 0
        return self._open_sink().insert(events, redelivery=redelivery)

    async def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        """A read query through the worker thread: in embedded mode the writer's process is
        the only one holding chDB, so reports come here."""
        return await self._in_worker(lambda: self._open_sink().query(sql, parameters))

    async def export(self, sql: str, parameters: dict[str, Any] | None, fmt: str) -> bytes:
        return await self._in_worker(lambda: self._open_sink().export(sql, parameters, fmt))

    async def ping(self) -> None:
        await self._in_worker(lambda: self._open_sink().ping())

    # --- stats, heartbeats, pauses -------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return dict(self._stats)

    async def wait_for(self, predicate: Callable[[dict], bool], timeout: float) -> dict:
        """Wait until `predicate(stats())` holds (stats change after every step); raises
        TimeoutError after `timeout` seconds. For tests, benchmarks and orderly shutdown."""
        async with asyncio.timeout(timeout):
            while not predicate(self.stats()):
                await self._changed.wait()
        return self.stats()

    def _set(self, **changes: Any) -> None:
        self._stats.update(changes)
        # Wake every waiter; the next change needs a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def _stored(self, batch: Batch, sent: int) -> None:
        self._failures = 0
        self._stats["events_sent"] += sent
        self._stats["batches"] += 1
        self._stats["redelivered_batches"] += int(batch.redelivery)
        self._set(state="running", last_insert_at=time.time())

    def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        self._stats["retries"] += 1
        self._set(state="retrying", last_error=f"{type(exc).__name__}: {exc}"[:500], last_error_at=time.time())

    async def _pause(self) -> bool:
        """Sleep the backoff for the current failure streak, or until stop(); True if stopped.
        Doubling from backoff_initial_s to the cap: a short outage drains at once, a long
        one costs one attempt per backoff_max_s."""
        delay = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** max(0, self._failures - 1))
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except TimeoutError:
            return False
        return True

    async def _heartbeats(self) -> None:
        key = f"{self.prefix}hb:writer:{self.name}"
        client = aioredis.from_url(self.redis_url)  # own connection: never queued behind a BLOCK read
        try:
            while not self._stopping.is_set():
                try:
                    await client.set(key, orjson.dumps(self.stats()), px=int(self.options.heartbeat_ttl_s * 1000))
                except Exception as exc:  # Redis down: the loop reports it; the beat just lapses
                    log.debug("%s: heartbeat failed: %s", self.name, exc)
                try:
                    await asyncio.wait_for(self._stopping.wait(), self.options.heartbeat_s)
                except TimeoutError:
                    pass
        finally:
            await client.aclose()


def _factory(sink: SinkFactory | str, database: str) -> SinkFactory:
    if callable(sink):
        return sink
    from storage.events_clickhouse import ClickHouseSink  # only DSN users need clickhouse-connect

    return lambda: ClickHouseSink(sink, database)

