"""One stage of the chaos suite, in a process of its own (one Ray cluster per process): start a
whole peakdesk on this machine, then for each fault run a surge phase, inject the fault while
it runs, let it finish, and measure. Writes one JSON object (its phases) to OUT as it goes.

    python -m bench.chaos.stage local OUT.json --faults gateway,host,writer,redis,chdb [--short]
    python -m bench.chaos.stage node OUT.json [--short]

`local`: Redis from storage.redis_server, a local Ray cluster, embedded chDB (as
tests/gateway_cluster.Peakdesk starts them). `node`: the same on a two-node Ray cluster on this
machine (ray.cluster_utils: two raylets, as `ray start` runs them; one actor host on each).
Everything listens on 127.0.0.1 (Ray itself on this machine's address: see DESIGN.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import trio  # noqa: E402

from bench.metrics import Metrics  # noqa: E402
from bench.people import Ledger  # noqa: E402
from bench.rest import Login, events_in_clickhouse, http_base  # noqa: E402
from bench.verify import compare_events, delivery, expected_events  # noqa: E402

from .faults import Injector  # noqa: E402
from .load import Health, LoadOptions, run_load  # noqa: E402
from .modes import MODES  # noqa: E402
from .people import Tracker  # noqa: E402

STALL_S = 1.0   # a message slower than this, delivered after the kill, was held up by the fault


def _terminated(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")   # unwinds through the orderly stops below


def main() -> int:
    signal.signal(signal.SIGTERM, _terminated)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("local", "node"))
    p.add_argument("out", type=Path)
    p.add_argument("--faults", default="gateway,host,writer,redis,chdb")
    p.add_argument("--mode", choices=sorted(MODES), default="short")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    faults = ["node"] if args.kind == "node" else [f for f in args.faults.split(",") if f]
    mode = MODES[args.mode]
    report: dict = {"kind": args.kind, "mode": args.mode, "phases": []}
    tmp = Path(tempfile.mkdtemp(prefix=f"pd-chaos-{args.kind}-"))
    t0 = time.monotonic()
    try:
        with _peakdesk(args.kind, tmp, mode) as (pd, redis_server, rc, worker_node):
            report["startup_s"] = round(time.monotonic() - t0, 1)
            injector = Injector(pd, redis_server, mode["redis_down_s"], rc, worker_node)
            login = Login.from_data_dir(tmp)
            for i, fault in enumerate(faults):
                report["phases"].append(run_phase(fault, pd, injector, login, mode, args.seed + i))
                _write(args.out, report)
    except (Exception, SystemExit):
        report["error"] = traceback.format_exc()[-4000:]
        report["data_dir"] = str(tmp)
        _write(args.out, report)
        sys.stderr.write(report["error"])
        return 1
    report["seconds"] = round(time.monotonic() - t0, 1)
    _write(args.out, report)
    shutil.rmtree(tmp, ignore_errors=True)   # kept when the stage failed: its data tells what happened
    return 0


def _write(out: Path, report: dict) -> None:
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(out)


class _peakdesk:
    """Redis, Ray (local, or two nodes), hosts, writer and gateway; stopped in order."""

    def __init__(self, kind: str, tmp: Path, mode: dict):
        self.kind, self.tmp, self.mode = kind, tmp, mode
        self.pd = self.redis_server = self.rc = None

    def __enter__(self):
        import ray

        from storage.redis_server import free_port, start_redis
        from tests.gateway_cluster import Peakdesk

        self.redis_server = start_redis(self.tmp / "redis")
        limits = {"max_connections_per_ip": 20_000, "frames_per_s": 1000, "widget_sessions_per_ip_per_min": 1_000_000}
        namespace, prefix = f"pd-chaos-{self.kind}", "chaos:"
        worker_node = None
        if self.kind == "local":
            ray.init(address="local", include_dashboard=False, object_store_memory=128 * 1024 * 1024,
                     namespace=namespace, logging_level="WARNING")
            extra = {}
        else:
            from ray.cluster_utils import Cluster as RayCluster

            self.rc = RayCluster(initialize_head=True, head_node_args={"num_cpus": 2,
                                                                       "object_store_memory": 128 * 1024 * 1024})
            worker_node = self.rc.add_node(num_cpus=2, object_store_memory=128 * 1024 * 1024)
            self.rc.wait_for_nodes()
            ray.init(address=self.rc.address, namespace=namespace, logging_level="WARNING")
            extra = {"ray_address": self.rc.address}
        self.pd = Peakdesk(self.redis_server.url, self.tmp, namespace, prefix, port=free_port(), **limits, **extra)
        return self.pd, self.redis_server, self.rc, worker_node

    def __exit__(self, *exc):
        import ray

        try:
            if self.pd is not None:
                self.pd.stop()
        finally:
            ray.shutdown()
            if self.rc is not None:
                self.rc.shutdown()
            if self.redis_server is not None:
                self.redis_server.stop()
        return False


def run_phase(fault: str, pd, injector: Injector, login: Login, mode: dict, seed: int) -> dict:
    """A surge with `fault` injected `kill_at` seconds into its arrivals; what it measured."""
    ledger, metrics, track, health = Ledger(), Metrics(), Tracker(), Health()
    started = threading.Event()
    o = LoadOptions(url=pd.url, login=login, plan=mode["plan"], profile=mode["profile"], duration=mode["duration"],
                    grace=mode["grace"], wind_down=mode["wind_down"], seed=seed)
    result: dict = {}

    def load() -> None:
        try:
            result["info"] = trio.run(run_load, o, ledger, metrics, track, health, started)
        except BaseException:  # reported in the phase, never swallowed
            result["error"] = traceback.format_exc()[-3000:]
            started.set()

    sys.stderr.write(f"chaos: {fault}: surge starts\n")
    thread = threading.Thread(target=load, name=f"load-{fault}", daemon=True)
    phase_t0 = time.monotonic()
    thread.start()
    injected: dict = {}
    arrivals_t0 = phase_t0
    if started.wait(timeout=120) and "error" not in result:
        arrivals_t0 = time.monotonic()   # the first customer may arrive: the surge's clock starts
        time.sleep(mode["kill_at"])
        try:
            injected = injector.inject(fault)
        except Exception:  # a fault that could not be injected is a failed phase, with the reason
            injected = {"error": traceback.format_exc()[-2000:]}
        sys.stderr.write(f"chaos: {fault}: injected {json.dumps({k: v for k, v in injected.items() if k != 'at'})}\n")
    thread.join(timeout=mode["duration"] + mode["grace"] + mode["wind_down"] + 120)
    if thread.is_alive():
        result.setdefault("error", "the load did not finish in time")
    load_s = time.monotonic() - phase_t0
    d = delivery(ledger)
    outbox = wait_outbox_drained(pd.settings, mode["drain_wait"])
    events = trio.run(check_events, pd.url, result.get("info", {}).get("owner_token"), ledger, mode["events_wait"]) \
        if "info" in result else {"expected": 0, "in_clickhouse": 0, "differences": {"run": "failed"}, "copies": 0}
    kill_at = injected.get("at")
    recovery = measure_recovery(kill_at, track, health) if kill_at else {}
    drained = outbox["drained"] and not events["differences"] and not events["copies"]
    phase = {
        "fault": fault, "injected": {k: v for k, v in injected.items() if k != "at"},
        "kill_after_s": round(kill_at - arrivals_t0, 1) if kill_at else None,   # into the arrivals
        "conversations": len(ledger.conversations), "closed": sum(c.closed for c in ledger.conversations.values()),
        "sent": metrics.sent, "acked": d["acked"], "delivered": d["delivered"], "lost": d["lost"],
        "duplicated": d["duplicated"], "unacked": track.counts.get("unacked", 0),
        **recovery, "outbox": outbox, "events": events, "outbox_drained": drained,
        "people": dict(track.counts),
        "stuck": [{**x, "at": round(x["at"] - (kill_at or phase_t0), 1),
                   **({"events": _events_of(pd, x["session"], kill_at or phase_t0)} if i < 5 else {})}
                  for i, x in enumerate(track.stuck[:20])],
        "errors": metrics.errors, "error_kinds": dict(metrics.error_kinds),
        "load_s": round(load_s, 1), **({"load_error": result["error"]} if "error" in result else {}),
        "refusals": [{**x, "at": round(x["at"] - (kill_at or phase_t0), 2)} for x in track.refusals[:20]],
        "lost_detail": lost_detail(ledger, pd, kill_at or phase_t0) if d["lost"] or d["duplicated"] else [],
    }
    sys.stderr.write(f"chaos: {fault}: {phase['acked']} acked, {phase['lost']} lost, {phase['duplicated']} twice, "
                     f"recovered in {phase.get('recover_s')} s, outbox drained {drained}\n")
    return phase


def lost_detail(ledger: Ledger, pd, since: float, limit: int = 10) -> list[dict]:
    """The conversations that lost or repeated something: what each side was acked and saw, and
    the conversation's events in ClickHouse (seconds from the kill), to tell what happened."""
    out = []
    for conv in ledger.conversations.values():
        lost_to_agent = sorted(conv.customer_acked - set(conv.to_agent))
        lost_to_customer = sorted(conv.agent_acked - set(conv.to_customer))
        twice = sorted(s for seen in (conv.to_agent, conv.to_customer) for s, n in seen.items() if n > 1)
        if lost_to_agent or lost_to_customer or twice:
            out.append({"session": conv.session, "lost_to_agent": lost_to_agent, "lost_to_customer": lost_to_customer,
                        "twice": twice, "customer_acked": sorted(conv.customer_acked),
                        "agent_acked": sorted(conv.agent_acked), "to_agent": sorted(conv.to_agent),
                        "to_customer": sorted(conv.to_customer), "closed": conv.closed,
                        "events": _events_of(pd, conv.session, since)})
        if len(out) >= limit:
            break
    return out


def _events_of(pd, session: str, since: float) -> list:
    import ray

    try:
        rows = ray.get(pd.cluster.writers["writer-0"].query.remote(
            "SELECT toUnixTimestamp64Milli(ts), type, actor_key, seq, payload FROM events WHERE session_id = {s:String}"
            " ORDER BY ts, seq", {"s": session}), timeout=30)
    except Exception as exc:  # a diagnosis only
        return [repr(exc)]
    offset = time.time() - time.monotonic()   # the events' wall clock, as seconds from the kill
    return [[round(ms / 1000 - offset - since, 2), t, actor, seq, payload[:160]] for ms, t, actor, seq, payload in rows]


def measure_recovery(kill_at: float, track: Tracker, health: Health) -> dict:
    """traffic_s: from the kill until the last message the fault held up (delivered after the
    kill, slower than STALL_S from send to receipt) got through — 0 when none was held up;
    health_s: until /healthz answered ok after its last failure — 0 when no probe failed;
    recover_s: the later of the two."""
    held = [(track.delivered[c] - kill_at) for c, sent in track.sent.items()
            if c in track.delivered and track.delivered[c] > kill_at and track.delivered[c] - sent > STALL_S]
    traffic_s = max(held, default=0.0)
    after = [(t, ok) for t, ok in health.samples if t >= kill_at]
    bad = [t for t, ok in after if not ok]
    if not bad:
        health_s = 0.0
    else:
        oks = [t for t, ok in after if ok and t > bad[-1]]
        health_s = (oks[0] - kill_at) if oks else None   # never ok again within the phase
    recover = None if health_s is None else max(traffic_s, health_s)
    return {"traffic_s": round(traffic_s, 2), "held_up": len(held),
            "health_s": None if health_s is None else round(health_s, 2),
            "recover_s": None if recover is None else round(recover, 2)}


def wait_outbox_drained(settings, timeout: float) -> dict:
    """Until the outbox backlog is 0 with nothing being written (bounded)."""
    import asyncio

    from actors.status import collect

    t0 = time.monotonic()
    last: dict = {}
    while True:
        try:
            last = asyncio.run(collect(settings.redis_url, settings.prefix))["outbox"]
        except Exception as exc:  # Redis restarting: try again
            last = {"error": repr(exc)}
        if not last.get("error") and last["events"] == 0 and not sum(last["pending"].values()) \
                and not sum(last["entries"].values()):
            return {"drained": True, "seconds": round(time.monotonic() - t0, 1), "backlog": 0}
        if time.monotonic() - t0 > timeout:
            return {"drained": False, "seconds": round(time.monotonic() - t0, 1), "backlog": last}
        time.sleep(0.25)


IGNORED = ("audit.",)   # agents opening a conversation (every resume after a reconnect): not the run's doing


async def check_events(url: str, owner_token: str, ledger: Ledger, timeout: float) -> dict:
    """ClickHouse's distinct events per type for the phase's conversations against what the
    people saw (bench.verify.expected_events), until equal or `timeout`."""
    for conv in ledger.conversations.values():
        conv.invited = conv.invited or conv.closed   # a close from queued/assigned always invites
    want = expected_events(ledger)
    sessions = list(ledger.conversations)
    got, diff = {"counts": {}, "copies": 0}, {}
    if not sessions:
        return {"expected": 0, "in_clickhouse": 0, "differences": {}, "copies": 0}
    with trio.move_on_after(timeout):
        while True:
            try:
                got = await events_in_clickhouse(http_base(url), owner_token, sessions)
            except Exception as exc:  # the gateway or writer still coming back
                got = {"counts": {}, "copies": 0, "error": repr(exc)}
            counts = {t: n for t, n in got["counts"].items() if not t.startswith(IGNORED)}
            diff = compare_events(want, counts)
            if not diff and not got["copies"]:
                break
            await trio.sleep(1.0)
    counts = {t: n for t, n in got["counts"].items() if not t.startswith(IGNORED)}
    return {"expected": sum(want.values()), "in_clickhouse": sum(counts.values()),
            "differences": {t: {"expected": e, "in_clickhouse": g} for t, (e, g) in diff.items()},
            "copies": got["copies"]}


if __name__ == "__main__":
    sys.exit(main())
