"""`peakdesk bench` end to end: the profile run, the optional saturation baseline, verification,
the report; the exit status says whether anything was lost, duplicated or missing."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import trio

from . import report
from .baseline import echo_closed_loop, peakdesk_closed_loop
from .metrics import Metrics
from .people import Ledger
from .surge import Options, run_profile, summary, verify_events
from .verify import delivery

SMOKE = dict(duration=10.0, grace=20.0, events_wait=30.0)
SMOKE_PLAN = dict(customers=8, agents=2, agent_capacity=10, messages=3, customer_think_s=0.3, agent_think_s=0.2)


def smoke(o: Options) -> Options:
    """A 10-second small run that checks the whole conversation path."""
    return dataclasses.replace(o, **SMOKE, plan=dataclasses.replace(o.plan, **SMOKE_PLAN))


def run(o: Options, baseline: str | None = None, json_path: Path | None = None, plot_path: Path | None = None,
        out=None) -> int:
    out = out or sys.stdout
    metrics, ledger = Metrics(), Ledger()
    o = dataclasses.replace(o, progress=report.progress(o.duration))
    t0 = time.perf_counter()
    info = trio.run(run_profile, o, metrics, ledger)
    elapsed = time.perf_counter() - t0
    sys.stderr.write("\n")
    events = trio.run(verify_events, o, ledger, info["owner_token"])
    s = summary(metrics, ledger, events, elapsed)
    s.update(profile=o.profile, url=o.url, plan=dataclasses.asdict(o.plan), duration_s=o.duration)
    if baseline == "echo":
        rate, _, sat_ledger = trio.run(peakdesk_closed_loop, o, o.saturation_s, o.saturation_connections)
        echo = echo_closed_loop(o.saturation_s, o.saturation_connections)
        sat = delivery(sat_ledger)
        s["baseline"] = {"kind": "echo", "connections": o.saturation_connections, "seconds": o.saturation_s,
                         "throughput_msgs_per_s": round(echo, 1), "peakdesk_msgs_per_s": round(rate, 1),
                         "ratio": round(rate / echo, 3) if echo else 0.0,
                         "peakdesk_lost": sat["lost"], "peakdesk_duplicated": sat["duplicated"]}
    out.write(report.table(s) + "\n")
    if json_path:
        report.write_json(json_path, s)
    if plot_path:
        report.plot(plot_path, s)
    return verdict(s, out)


def verdict(s: dict, out=None) -> int:
    out = out or sys.stdout
    problems = []
    if s["lost"] or s["duplicated"]:
        problems.append(f"{s['lost']} lost, {s['duplicated']} duplicated")
    if s["events_differences"] or s["events_copies"]:
        problems.append(f"events differ from the run's: {s['events_differences']} (copies {s['events_copies']})")
    if s["conversations"]["closed"] == 0:
        problems.append("no conversation went all the way through")
    b = s.get("baseline") or {}
    if b.get("peakdesk_lost") or b.get("peakdesk_duplicated"):
        problems.append(f"saturation: {b['peakdesk_lost']} lost, {b['peakdesk_duplicated']} duplicated")
    for p in problems:
        out.write(f"FAIL: {p}\n")
    if not problems:
        out.write("OK: every message delivered exactly once; ClickHouse holds exactly the run's events\n")
    return 1 if problems else 0
