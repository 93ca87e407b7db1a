"""Gateway benchmark: messages/s through peakdesk's websocket gateway (customer sends, the
session actor commits, the ack comes back) beside a bare Quart-on-Hypercorn echo on the same
machine and load, and the ratio. Prints a table; asserts nothing about time.

    python -m bench.gateway [--connections 100] [--seconds 10]

Starts its own Redis, Ray, hosts, writer and gateway (and the echo server) under a temporary
directory and stops them; every loop is bounded in time.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import trio
import trio_websocket

ECHO_APP = '''
import sys
from quart import Quart, websocket
from hypercorn.config import Config
from hypercorn.asyncio import serve
import asyncio
app = Quart("echo")

@app.websocket("/ws")
async def ws():
    while True:
        await websocket.send(await websocket.receive())

config = Config(); config.bind = ["127.0.0.1:" + sys.argv[1]]; config.accesslog = None
asyncio.run(serve(app, config))
'''


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


async def _drive(url: str, connections: int, seconds: float, setup, one_trip) -> tuple[int, list[float]]:
    """Each connection does round trips back to back until the time is up."""
    latencies: list[float] = []
    deadline = trio.current_time() + seconds

    async def client(i: int):
        async with trio_websocket.open_websocket_url(url) as ws:
            state = await setup(ws, i)
            while trio.current_time() < deadline:
                t0 = time.perf_counter()
                await one_trip(ws, state)
                latencies.append(time.perf_counter() - t0)

    async with trio.open_nursery() as n:
        for i in range(connections):
            n.start_soon(client, i)
    return len(latencies), latencies


async def echo_setup(ws, i):
    return {"n": 0}


async def echo_trip(ws, state):
    state["n"] += 1
    await ws.send_message(orjson.dumps({"t": "msg", "cid": f"c{state['n']}", "content": {"text": "在吗 hi"}}).decode())
    await ws.get_message()


def gateway_calls(token: str):
    async def setup(ws, i):
        await ws.send_message(orjson.dumps({"t": "hello", "token": token}).decode())
        await ws.get_message()
        await ws.send_message(orjson.dumps({"t": "open", "id": "o"}).decode())
        while True:
            frame = orjson.loads(await ws.get_message())
            if frame["t"] == "opened":
                return {"session": frame["session"], "n": 0}

    async def trip(ws, state):
        state["n"] += 1
        cid = f"c{state['n']}"
        await ws.send_message(orjson.dumps({"t": "msg", "cid": cid, "session": state["session"], "kind": "text",
                                            "content": {"text": "在吗 hi"}}).decode())
        while True:
            frame = orjson.loads(await ws.get_message())
            if frame.get("t") == "ack" and frame.get("cid") == cid:
                return
    return setup, trip


def run_echo(args) -> tuple[int, list[float]]:
    from storage.redis_server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO_APP, str(port)])
    try:
        time.sleep(2.0)
        return trio.run(_drive, f"ws://127.0.0.1:{port}/ws", args.connections, args.seconds, echo_setup, echo_trip)
    finally:
        proc.terminate()
        proc.wait()


def run_gateway(args) -> tuple[int, list[float]]:
    import ray

    from storage.redis_server import start_redis
    from tests.gateway_cluster import Peakdesk

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="peakdesk-gwbench-") as tmp:
        redis_server = start_redis(Path(tmp) / "redis")
        ray.init(address="local", include_dashboard=False, object_store_memory=256 * 1024 * 1024,
                 logging_level="WARNING")
        pd = None
        try:
            pd = Peakdesk(redis_server.url, Path(tmp), "pd-bench", "bench:")
            token = pd.visitor_token()
            setup, trip = gateway_calls(token)
            return trio.run(_drive, pd.url, args.connections, args.seconds, setup, trip)
        finally:
            if pd:
                pd.stop()
            ray.shutdown()
            redis_server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    rows = [("bare Quart echo", *run_echo(args)), ("peakdesk gateway (msg -> durable ack)", *run_gateway(args))]
    print(f"\nwebsocket round trips, {args.connections} connections, {args.seconds:.0f} s each, this machine")
    print(f"{'path':<40}{'trips/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for label, n, lat in rows:
        print(f"{label:<40}{n / args.seconds:>10,.0f}{percentile(lat, 50) * 1e3:>9.1f}"
              f"{percentile(lat, 99) * 1e3:>9.1f}{max(lat) * 1e3:>9.1f}")
    print(f"ratio gateway / echo: {rows[1][1] / max(rows[0][1], 1):.2f}")


if __name__ == "__main__":
    main()
