"""Runtime benchmark: envelopes/s through the actor runtime, same-host and cross-host, and
event rows/s from actors through the outbox into ClickHouse (chDB). Prints a table; asserts
nothing about time.

    python -m bench.runtime [--hosts 2] [--envelopes 100000] [--relays 1000] [--hops 40]
                            [--events 100000]

It starts its own Redis, a local Ray cluster and chDB under a temporary directory, and stops
them at the end. Every phase is bounded in count and by --timeout.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from actors.cluster import Cluster
from actors.envelope import ActorRef, Envelope
from actors.placement import PlacementTable
from actors.router import Router
from actors.settings import Settings
from actors.transport import RayTransport
from bench import throwaway_master_key
from storage.redis_server import start_redis

WINDOW = 64  # batches of envelopes the driver keeps in flight


async def _pump(router: Router, envs: list[Envelope], batch: int) -> float:
    """Send envelopes with up to WINDOW batches in flight; seconds until all acknowledged."""
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(WINDOW)

    async def one(chunk):
        async with sem:
            await router.send(chunk)

    await asyncio.gather(*(one(envs[i:i + batch]) for i in range(0, len(envs), batch)))
    return time.perf_counter() - t0


def _pairs(table: PlacementTable, n: int, same_host: bool, tag: str) -> list[tuple[str, str]]:
    """n pairs of echo actors, both on one host or each on a different one."""
    pairs, i = [], 0
    while len(pairs) < n:
        a, b = f"{tag}a{i}", f"{tag}b{i}"
        i += 1
        same = table.owner(ActorRef("echo", "bench", a)) == table.owner(ActorRef("echo", "bench", b))
        if same == same_host:
            pairs.append((a, b))
    return pairs


async def _relay(router: Router, cluster: Cluster, pairs, hops: int, timeout: float) -> tuple[int, float]:
    """Each pair passes a message back and forth `hops` times; returns (deliveries, seconds)."""
    before = sum(s["handled"] for s in cluster.statistics().values())
    t0 = time.perf_counter()
    await router.send([Envelope(ActorRef("echo", "bench", a), "relay", {"peer": b, "left": hops}) for a, b in pairs])
    want = before + len(pairs) * (hops + 1)
    while time.perf_counter() - t0 < timeout:
        done = sum(s["handled"] for s in cluster.statistics().values())
        if done >= want:
            break
        await asyncio.sleep(0.02)
    return done - before, time.perf_counter() - t0


async def _events(router: Router, cluster: Cluster, n: int, batch: int, timeout: float) -> tuple[int, float]:
    """n messages to 1,000 sessions, each one event; seconds until all are rows in ClickHouse."""
    writer = next(iter(cluster.writers.values()))
    base = (await writer.query.remote("SELECT count() FROM events WHERE merchant_id = 'bench'"))[0][0]
    envs = [Envelope(ActorRef("session", "bench", f"s{i % 1000}"), "message", {"text": "在吗 hello", "n": i})
            for i in range(n)]
    t0 = time.perf_counter()
    await _pump(router, envs, batch)
    rows = 0
    while time.perf_counter() - t0 < timeout:
        rows = (await writer.query.remote("SELECT count() FROM events WHERE merchant_id = 'bench'"))[0][0] - base
        if rows >= n:
            break
        await asyncio.sleep(0.05)
    return rows, time.perf_counter() - t0


async def run(args, cluster: Cluster) -> list[tuple[str, int, float]]:
    table = cluster.table()
    router = Router("bench", RayTransport(cluster.settings.namespace), table)
    rows = []
    warm = [Envelope(ActorRef("echo", "bench", f"w{i}"), "ping", {}) for i in range(2000)]
    await _pump(router, warm, args.batch)
    envs = [Envelope(ActorRef("echo", "bench", f"e{i % 10_000}"), "ping", {}) for i in range(args.envelopes)]
    rows.append(("driver -> hosts (Ray calls)", args.envelopes, await _pump(router, envs, args.batch)))
    for label, same in (("actor -> actor, same host", True), ("actor -> actor, cross host", False)):
        if not same and len(table.active) < 2:
            continue  # one host: nothing crosses
        n, secs = await _relay(router, cluster, _pairs(table, args.relays, same, "same" if same else "cross"), args.hops, args.timeout)
        rows.append((label, n, secs))
    n, secs = await _events(router, cluster, args.events, args.batch, args.timeout)
    rows.append(("event rows -> ClickHouse (end to end)", n, secs))
    return rows


def main() -> None:
    throwaway_master_key()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=2)
    p.add_argument("--envelopes", type=int, default=100_000)
    p.add_argument("--relays", type=int, default=1000, help="actor pairs relaying at once")
    p.add_argument("--hops", type=int, default=40)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=256, help="envelopes per driver send")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per phase at most")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="peakdesk-bench-") as tmp:
        redis_server = start_redis(Path(tmp) / "redis")
        settings = Settings(data_dir=Path(tmp), redis_url=redis_server.url, hosts=args.hosts)
        cluster = Cluster(settings)
        try:
            cluster.start(gateway=False)
            rows = asyncio.run(run(args, cluster))
        finally:
            cluster.stop()
            import ray

            ray.shutdown()
            redis_server.stop()
    print(f"\npeakdesk runtime benchmark — {args.hosts} hosts, this machine")
    print(f"{'path':<40}{'count':>10}{'seconds':>10}{'per second':>14}")
    for label, n, secs in rows:
        print(f"{label:<40}{n:>10}{secs:>10.2f}{n / secs:>14,.0f}")


if __name__ == "__main__":
    main()
