"""Event rows/s into ClickHouse (embedded chDB): straight into the sink, and end to end from
the Redis outbox through an OutboxWriter. Prints a table; asserts nothing about time.

    python -m bench.events_throughput [--events 200000] [--batch 5000] [--round 100]

--batch is the events per sink insert (direct) and the writer's max_batch_events; --round is
the events per outbox entry (one host round's commit). Starts its own Redis and chDB under a
temporary directory and removes them at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench import throwaway_master_key
from storage import outbox
from storage.events import Event
from storage.events_clickhouse import ClickHouseSink
from storage.redis_server import start_redis
from storage.writer import OutboxWriter

SHARDS = [0, 1, 2, 3]
PHASE_TIMEOUT_S = 120  # a phase that takes longer is reported as unfinished, not waited for


def make_events(n: int, merchants: int = 20) -> list[Event]:
    """Chat messages spread over merchants and sessions, Chinese and English text."""
    t0 = int(time.time() * 1000)
    return [
        Event(merchant_id=f"m{i % merchants}", type="message.sent", actor_key=f"session:s{i // 20}",
              seq=i % 20 + 1, session_id=f"s{i // 20}", channel="web", customer_id=f"c{i // 20}",
              payload={"text": "您好，我的订单什么时候发货？ When will my order ship?", "n": i}, ts=t0 + i)
        for i in range(n)
    ]


def direct(dsn: str, events: list[Event], batch: int, redelivery: bool) -> tuple[float, int]:
    """Seconds to insert every batch straight into the sink, and the rows stored."""
    sink = ClickHouseSink(dsn, f"bench_direct_{int(redelivery)}")
    try:
        t0 = time.perf_counter()
        for i in range(0, len(events), batch):
            sink.insert(events[i:i + batch], redelivery=redelivery)
        elapsed = time.perf_counter() - t0
        return elapsed, sink.query("SELECT uniqExact(event_id) FROM events")[0][0]
    finally:
        sink.close()


async def append_all(r: aioredis.Redis, prefix: str, events: list[Event], round_size: int) -> None:
    """One MULTI per round, shards in turn, as hosts commit."""
    for n, i in enumerate(range(0, len(events), round_size)):
        async with r.pipeline(transaction=True) as pipe:
            outbox.append(pipe, prefix, SHARDS[n % len(SHARDS)], events[i:i + round_size])
            await pipe.execute()


async def through_outbox(redis_url: str, dsn: str, events: list[Event], batch: int, round_size: int,
                         prefill: bool) -> tuple[float, float, int]:
    """(seconds appending, seconds until the writer stored the last event, rows stored).
    prefill: the whole backlog is appended before the writer starts (its drain rate);
    otherwise the producer appends while the writer drains (end to end)."""
    prefix, database = ("bench-prefill:", "bench_prefill") if prefill else ("bench-e2e:", "bench_e2e")
    writer = OutboxWriter(redis_url, dsn, SHARDS, database=database, prefix=prefix,
                          max_batch_events=batch, block_ms=100)
    await writer.ping()  # opens chDB and migrates before the clock starts
    r = aioredis.from_url(redis_url)
    t0 = time.perf_counter()
    task = None if prefill else asyncio.create_task(writer.run())
    await append_all(r, prefix, events, round_size)
    appended = time.perf_counter() - t0
    if prefill:
        t0, task = time.perf_counter(), asyncio.create_task(writer.run())
    try:
        await writer.wait_for(lambda s: s["events_written"] >= len(events), PHASE_TIMEOUT_S)
    except TimeoutError:
        pass
    drained = time.perf_counter() - t0
    writer.stop()
    await task
    rows = (await writer.query("SELECT uniqExact(event_id) FROM events"))[0][0]
    await writer.close()
    await r.aclose()
    return appended, drained, rows


def row(name: str, n: int, batch: str, seconds: float, stored: int) -> str:
    return f"{name:<40}{n:>9}{batch:>12}{seconds:>9.2f}{n / seconds:>12,.0f}{'yes' if stored == n else f'NO ({stored})':>8}"


def main() -> None:
    throwaway_master_key()
    parser = argparse.ArgumentParser(description="event rows/s into chDB, direct and through the outbox")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--round", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pd-bench-") as tmp:
        redis_server = start_redis(Path(tmp) / "redis")
        dsn = f"chdb://{Path(tmp) / 'chdb'}"
        try:
            events = make_events(args.events)
            print(f"{'PHASE':<40}{'EVENTS':>9}{'BATCH':>12}{'SECONDS':>9}{'ROWS/S':>12}{'EXACT':>8}")
            for redelivery in (False, True):
                seconds, stored = direct(dsn, events, args.batch, redelivery)
                name = "sink.insert" + (" (redelivery lookup)" if redelivery else "")
                print(row(name, args.events, str(args.batch), seconds, stored))
            appended, drained, stored = asyncio.run(through_outbox(
                redis_server.url, dsn, make_events(args.events), args.batch, args.round, prefill=True))
            print(row("outbox append (one MULTI per entry)", args.events, f"{args.round}/entry", appended, args.events))
            print(row("writer drains a full outbox into chDB", args.events, str(args.batch), drained, stored))
            _, drained, stored = asyncio.run(through_outbox(
                redis_server.url, dsn, make_events(args.events), args.batch, args.round, prefill=False))
            print(row("append + writer concurrently, end to end", args.events, str(args.batch), drained, stored))
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()
