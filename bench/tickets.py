"""Tickets at a promotion peak: opening, updating, commenting and sweeping SLA deadlines against
a real Redis (started here, or --redis-url), with webhooks subscribed so every change also
queues its delivery. Prints operations per second and latency percentiles; asserts nothing
about time.

    python -m bench.tickets [--tickets 5000] [--concurrency 32] [--merchants 4]

A 120,000-conversation day that turns 5 % of conversations into tickets opens 6,000 tickets,
each changed a handful of times: about 30,000 writes over a day, well under one a second on
average, a few hundred a minute at the peak hour.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import redis.asyncio as aioredis

from bench import throwaway_master_key
from storage.records import RecordStore
from storage.redis_server import start_redis
from storage.tickets import TicketStore, TicketSettings
from storage.tickets import sla
from storage.webhooks import WebhookStore

PREFIX = "bench-tickets:"


def _percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"p50 {pick(0.5):6.2f} ms  p99 {pick(0.99):6.2f} ms  max {ms[-1]:6.2f} ms"


async def _timed(n: int, concurrency: int, op) -> tuple[float, list[float]]:
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - started, latencies


async def main(args) -> None:
    throwaway_master_key()
    server = None
    url = args.redis_url
    if url is None:
        server = start_redis(tempfile.mkdtemp(prefix="pd-bench-tickets-"))
        url = server.url
    r = aioredis.from_url(url)
    try:
        await r.delete(*[k async for k in r.scan_iter(match=f"{PREFIX}*")] or ["-"])
        records = RecordStore(r, PREFIX)
        merchants = [f"shop{i}" for i in range(args.merchants)]
        short = TicketSettings.model_validate({"sla": {p: {"resolve_within_s": 1, "remind_before_s": 0}
                                                       for p in ("low", "normal", "high", "urgent")}})
        for m in merchants:
            await records.create_merchant(m, m, {"tickets": short.model_dump()}, actor="bench")
            await WebhookStore(r, PREFIX).create(m, "https://hooks.example/peakdesk", ["ticket.created", "ticket.updated"],
                                                 actor="bench")
        store = TicketStore(r, PREFIX)
        by = {"kind": "agent", "id": "bench"}
        ids: list[tuple[str, str]] = []

        async def create(i: int) -> None:
            m = merchants[i % len(merchants)]
            t = await store.create(m, short, {"title": f"工单 {i} broken kettle", "department": "after_sales",
                                              "priority": "high", "customer_id": f"c{i}"}, by)
            ids.append((m, t["ticket_id"]))

        async def update(i: int) -> None:
            m, tid = ids[i]
            await store.update(m, short, tid, {"status": "in_progress", "assignee": "a1"}, by)

        async def comment(i: int) -> None:
            m, tid = ids[i]
            await store.comment(m, short, tid, "已联系仓库 contacted the warehouse", False, [], by)

        print(f"tickets: {args.tickets}, merchants: {args.merchants}, concurrency: {args.concurrency}, Redis {url}")
        for name, op in (("create", create), ("update", update), ("comment", comment)):
            took, lat = await _timed(args.tickets, args.concurrency, op)
            print(f"{name:>8}: {args.tickets / took:8.0f} /s   {_percentiles(lat)}")
        await asyncio.sleep(1.2)      # every deadline is now due
        started, acted = time.perf_counter(), 0
        while True:
            n = await sla.sweep(store, records, limit=500)
            if not n and not await r.zcount(f"{PREFIX}tickets:due", "-inf", store._now()):
                break
            acted += n
        took = time.perf_counter() - started
        print(f"   sweep: {acted / took:8.0f} deadlines/s ({acted} escalations in {took:.2f} s, one sweeper)")
        jobs = await r.xlen(f"{PREFIX}jobs")
        print(f"    jobs: {jobs} webhook deliveries queued "
              f"({jobs / (args.tickets * 3 + acted):.2f} per change)")
        print(f"  memory: {(await r.info('memory'))['used_memory'] / 1e6:.1f} MB in Redis")
    finally:
        await r.aclose()
        if server is not None:
            server.stop()


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tickets", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--merchants", type=int, default=4)
    p.add_argument("--redis-url", default=None)
    args = p.parse_args()
    if not 1 <= args.tickets <= 1_000_000 or not 1 <= args.concurrency <= 1024 or not 1 <= args.merchants <= 1000:
        p.error("--tickets 1..1000000, --concurrency 1..1024, --merchants 1..1000")
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
