"""One phase's surge: a group and agents of its own, customers arriving on the bench's surge
curve (bench/profiles.py), each a fault-surviving person (bench/chaos/people.py), and a probe
of `GET /healthz` every `health_every_s` — all on trio, in the load thread of a stage. Every
wait is bounded: arrivals stop after `duration`, conversations get `grace` seconds more, then
whoever is still talking closes, with at most `wind_down` seconds for that."""
from __future__ import annotations

import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

import trio

from bench.metrics import Metrics
from bench.people import Ledger
from bench.profiles import Plan, arrivals, rate_curve
from bench.rest import Login, http_base, prepare, visitor_tokens
from bench.surge import _guard

from .people import Tracker, agent, customer


@dataclass
class LoadOptions:
    url: str
    login: Login
    plan: Plan = field(default_factory=Plan)
    profile: str = "surge"
    duration: float = 10.0        # seconds of arrivals
    grace: float = 30.0           # then for conversations to finish
    wind_down: float = 45.0       # then for the rest to close
    seed: int = 1
    health_every_s: float = 0.25


@dataclass
class Health:
    """(time.monotonic, ok) samples of GET /healthz."""

    samples: list[tuple[float, bool]] = field(default_factory=list)


def healthz(base: str, timeout: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=timeout) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


async def probe_health(base: str, health: Health, every: float) -> None:
    while True:
        ok = await trio.to_thread.run_sync(healthz, base, abandon_on_cancel=True)
        health.samples.append((time.monotonic(), ok))
        await trio.sleep(every)


async def run_load(o: LoadOptions, ledger: Ledger, metrics: Metrics, track: Tracker, health: Health,
                   started: threading.Event) -> dict:
    """The phase's traffic; `started` is set when the first customer may arrive (the fault
    injector counts its delay from then). Returns what it planned."""
    base = http_base(o.url)
    rng = random.Random(o.seed)
    plan = o.plan
    cast = await prepare(base, o.login, uuid.uuid4().hex[:8], plan.agents, plan.agent_capacity)
    times = arrivals(rate_curve(o.profile, plan, o.duration), o.duration, rng)
    tokens = await visitor_tokens(base, cast.merchant, len(times))
    stop, agents_done = trio.Event(), trio.Event()
    live = {"customers": 0}
    patience = o.duration + o.grace

    async def one_customer(token: str, person_rng: random.Random) -> None:
        live["customers"] += 1
        try:
            await _guard(metrics, "customer", customer, o.url, token, plan, cast.group, ledger, metrics, track,
                         person_rng, stop, patience)
        finally:
            live["customers"] -= 1

    async with trio.open_nursery() as outer:
        outer.start_soon(probe_health, base, health, o.health_every_s)
        for token in cast.agent_tokens:
            outer.start_soon(_guard, metrics, "agent", agent, o.url, token, plan, ledger, metrics, track,
                             random.Random(rng.random()), agents_done)
        with trio.move_on_after(10):     # the agents online before the first customer
            while track.counts["connects"] < len(cast.agent_tokens):
                await trio.sleep(0.05)
        await trio.sleep(0.5)
        started.set()
        async with trio.open_nursery() as customers:
            start = trio.current_time()
            for at, token in zip(times, tokens):
                await trio.sleep_until(start + at)
                customers.start_soon(one_customer, token, random.Random(rng.random()))
            with trio.move_on_after(o.grace):
                while live["customers"]:
                    await trio.sleep(0.2)
            stop.set()  # whoever is still talking closes now
            with trio.move_on_after(o.wind_down):
                while live["customers"]:
                    await trio.sleep(0.2)
            customers.cancel_scope.cancel()
        await trio.sleep(1.0)  # the agents' last answers in flight
        agents_done.set()
        await trio.sleep(0.2)
        outer.cancel_scope.cancel()
    return {"group": cast.group, "merchant": cast.merchant, "owner_token": cast.owner_token,
            "arrivals_planned": len(times), "still_talking_at_end": live["customers"]}
