"""Capacity at saturation: a closed loop (every customer sends its next message the moment the
answer arrives; agents answer at once) against peakdesk, and the same number of connections
against a bare Quart websocket echo started here — the ceiling this machine's websocket stack
allows. peakdesk's delivered messages/s as a ratio of that ceiling."""
from __future__ import annotations

import dataclasses
import math
import random
import subprocess
import sys
import time

import trio

from .gateway import ECHO_APP, _drive, echo_setup, echo_trip
from .metrics import Metrics
from .people import Ledger, agent, customer
from .rest import http_base, prepare, visitor_tokens


async def peakdesk_closed_loop(o, seconds: float, connections: int) -> tuple[float, Metrics, Ledger]:
    """Delivered messages per second with `connections` customers talking without pause."""
    base = http_base(o.url)
    agents = max(1, min(o.plan.agents, connections))
    plan = dataclasses.replace(o.plan, messages=1_000_000, customer_think_s=0.0, agent_think_s=0.0, csat_rate=0.0,
                               agents=agents, agent_capacity=min(100, math.ceil(connections / agents) + 1))
    cast = await prepare(base, o.login, "sat" + random.Random(o.seed).randbytes(3).hex(), plan.agents,
                         plan.agent_capacity)
    metrics, ledger = Metrics(), Ledger()
    stop, done = trio.Event(), trio.Event()
    rng = random.Random(o.seed)
    async with trio.open_nursery() as n:
        for token in cast.agent_tokens:
            n.start_soon(agent, o.url, token, plan, ledger, metrics, random.Random(rng.random()), done)
        tokens = await visitor_tokens(base, cast.merchant, connections)
        async with trio.open_nursery() as talkers:
            for token in tokens:
                talkers.start_soon(_quietly, customer, o.url, token, plan, cast.group, ledger, metrics,
                                   random.Random(rng.random()), stop, seconds + 60)
            await trio.sleep(2.0)  # everyone assigned and talking
            before, t0 = metrics.delivered, time.perf_counter()
            await trio.sleep(seconds)
            rate = (metrics.delivered - before) / (time.perf_counter() - t0)
            stop.set()
            with trio.move_on_after(30):
                while metrics.connections > len(cast.agent_tokens):
                    await trio.sleep(0.2)
            talkers.cancel_scope.cancel()
        done.set()
    return rate, metrics, ledger


async def _quietly(fn, *args) -> None:
    try:
        await fn(*args)
    except trio.Cancelled:
        raise
    except Exception:  # the closed loop's stragglers, cut at the end of the window: not measured
        pass


def echo_closed_loop(seconds: float, connections: int) -> float:
    """Echo round trips per second (each one message delivered) with `connections` clients."""
    from storage.redis_server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", ECHO_APP, str(port)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until it listens
            try:
                import socket
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        trips, _ = trio.run(_drive, f"ws://127.0.0.1:{port}/ws", connections, seconds, echo_setup, echo_trip)
        return trips / seconds
    finally:
        proc.terminate()
        proc.wait(10)
