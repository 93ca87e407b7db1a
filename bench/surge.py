"""`peakdesk bench`: drive a running peakdesk as customers and agents would, then prove that
nothing was lost or shown twice and that ClickHouse holds exactly the events the run caused.

Phases, each bounded in time and count:
1. the profile (steady | surge | soak) for `duration` seconds of arrivals, then up to `grace`
   seconds for conversations to finish; what is still going then is closed by its customer;
2. with `--baseline echo`: a closed loop (no think time) against peakdesk, and the same load
   against a bare Quart echo started here: peakdesk's delivered messages/s as a ratio;
3. verification: delivery (per-session sequence numbers) and events in ClickHouse.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

import trio

from .metrics import Metrics, percentiles_ms
from .people import Ledger, agent, customer
from .profiles import Plan, arrivals, rate_curve
from .rest import Login, events_in_clickhouse, http_base, prepare, visitor_tokens
from .verify import compare_events, delivery, expected_events


@dataclass
class Options:
    url: str = "ws://127.0.0.1:8080/ws"
    profile: str = "steady"
    duration: float = 60.0
    plan: Plan = field(default_factory=Plan)
    login: Login | None = None
    seed: int = 1
    grace: float = 60.0               # seconds after the arrivals for conversations to finish
    events_wait: float = 60.0         # seconds to wait for ClickHouse to hold every event
    saturation_s: float = 10.0        # closed-loop phase with --baseline echo
    saturation_connections: int = 100
    progress: callable = None         # (metrics, phase, planned arrivals) -> None, once a second


async def run_profile(o: Options, metrics: Metrics, ledger: Ledger) -> dict:
    base = http_base(o.url)
    rng = random.Random(o.seed)
    run_id = uuid.uuid4().hex[:8]
    plan = o.plan
    cast = await prepare(base, o.login, run_id, plan.agents, plan.agent_capacity)
    times = arrivals(rate_curve(o.profile, plan, o.duration), o.duration, rng)
    tokens = await visitor_tokens(base, cast.merchant, len(times))
    stop, agents_done = trio.Event(), trio.Event()
    patience = o.duration + o.grace
    async with trio.open_nursery() as outer:
        for token in cast.agent_tokens:
            outer.start_soon(_guard, metrics, "agent", agent, o.url, token, plan, ledger, metrics,
                             random.Random(rng.random()), agents_done)
        outer.start_soon(_ticker, o, metrics, len(times))
        async with trio.open_nursery() as customers:
            start = trio.current_time()
            for at, token in zip(times, tokens):
                await trio.sleep_until(start + at)
                customers.start_soon(_guard, metrics, "customer", customer, o.url, token, plan, cast.group,
                                     ledger, metrics, random.Random(rng.random()), stop, patience)
            with trio.move_on_after(o.grace):
                while metrics.connections > len(cast.agent_tokens):
                    await trio.sleep(0.2)
            stop.set()  # whoever is still talking closes now
        await trio.sleep(1.0)  # the last answers in flight
        agents_done.set()
        outer.cancel_scope.cancel()
    return {"group": cast.group, "merchant": cast.merchant, "owner_token": cast.owner_token,
            "arrivals_planned": len(times)}


async def _guard(metrics: Metrics, who: str, fn, *args) -> None:
    """One simulated person; a failure is counted as an error of the run, not a crash of it."""
    try:
        await fn(*args)
    except trio.Cancelled:
        raise
    except Exception as exc:  # a person's failure is a measurement, reported with its kind
        metrics.error(f"{who}: {type(exc).__name__}: {str(exc)[:80]}")


async def _ticker(o: Options, metrics: Metrics, planned: int) -> None:
    while True:
        await trio.sleep(1.0)
        if o.progress is not None:
            o.progress(metrics, planned)


async def verify_events(o: Options, ledger: Ledger, owner_token: str) -> dict:
    want = expected_events(ledger)
    sessions = list(ledger.conversations)
    got, diff = {"counts": {}, "copies": 0}, {}
    if not sessions:
        return {"expected": 0, "in_clickhouse": 0, "differences": {}, "copies": 0}
    with trio.move_on_after(o.events_wait):
        while True:
            got = await events_in_clickhouse(http_base(o.url), owner_token, sessions)
            # reading a conversation (audit.*) counts agents' (re)subscriptions, not the traffic
            got["counts"] = {t: n for t, n in got["counts"].items() if not t.startswith("audit.")}
            diff = compare_events(want, got["counts"])
            if not diff:
                break
            await trio.sleep(1.0)
    return {"expected": sum(want.values()), "in_clickhouse": sum(got["counts"].values()),
            "differences": {t: {"expected": e, "in_clickhouse": g} for t, (e, g) in diff.items()},
            "copies": got["copies"]}


def summary(metrics: Metrics, ledger: Ledger, events: dict, elapsed: float) -> dict:
    d = delivery(ledger)
    return {
        "messages_sent": metrics.sent, "messages_acked": d["acked"], "messages_delivered": d["delivered"],
        "lost": d["lost"], "duplicated": d["duplicated"],
        "throughput_msgs_per_s": round(d["delivered"] / max(elapsed, 1e-9), 1),
        "latency_ms": percentiles_ms(metrics.latency),
        "latency_to_agent_ms": percentiles_ms(metrics.to_agent),
        "latency_to_customer_ms": percentiles_ms(metrics.to_customer),
        "ack_ms": percentiles_ms(metrics.ack),
        "assign_wait_ms": {k: v for k, v in percentiles_ms(metrics.assign_wait).items() if k in ("p50", "p99", "max")},
        "connections_peak": metrics.connections_peak,
        "conversations": {"opened": metrics.conversations_opened, "closed": metrics.conversations_closed,
                          "rated": metrics.rated},
        "errors": metrics.errors, "error_kinds": dict(metrics.error_kinds),
        "events_expected": events["expected"], "events_in_clickhouse": events["in_clickhouse"],
        "events_differences": events["differences"], "events_copies": events["copies"],
        "seconds": round(elapsed, 1), "per_second": metrics.series(),
    }
