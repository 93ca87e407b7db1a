"""`python -m bench.chaos [--short] [--json OUT]`: the chaos suite.

It starts its own peakdesk on this machine — Redis (storage.redis_server), a local Ray cluster,
embedded chDB, hosts, writer and gateway on 127.0.0.1 — and runs a surge of conversations
(customers and agents over real websockets, as `peakdesk bench` does; bench/people's Ledger and
bench/verify judge them), once per fault, killing during the surge in turn:

  gateway  the gateway actor's process (kill -9)
  host     the actor host holding the most activations (kill -9)
  writer   the outbox writer (ray.kill, restart allowed)
  redis    redis-server (kill -9), restarted on its port and data dir (AOF)
  chdb     the process holding chDB — in embedded mode the writer — kill -9 while it holds a
           batch read from the outbox and not yet acknowledged
  node     a whole Ray worker node, removed from a two-node ray.cluster_utils cluster without a
           drain (a second peakdesk, in a process of its own)

For each: messages acknowledged, lost (acknowledged, never delivered), shown twice, never
acknowledged; seconds from the kill until the last message it held up got through (traffic)
and until /healthz was ok again (health); whether the outbox drained (backlog 0, and
ClickHouse's events for the run's conversations equal what the people saw).

Exit status 0: nothing lost or shown twice, every outbox drained, every fault injected;
1 otherwise; 2 for bad arguments. `--short` is the CI size (each fault once, small load, a few
minutes on 2 cores); the default is a longer, bigger surge. Every phase is bounded in time.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import report
from .faults import FAULTS

ROOT = Path(__file__).resolve().parent.parent.parent
STAGE_TIMEOUT_S = {"short": 420, "full": 3600}


def run_stage(kind: str, faults: list[str], mode: str, seed: int, workdir: Path, stream=sys.stderr) -> dict:
    """One stage in its own process (and process group); its progress lines (`chaos: ...`) are
    echoed, the rest of its output (Ray's) kept in a log file named in the report."""
    out, log_path = workdir / f"{kind}.json", workdir / f"{kind}.log"
    cmd = [sys.executable, "-m", "bench.chaos.stage", kind, str(out), "--faults", ",".join(faults),
           "--mode", mode, "--seed", str(seed)]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

        def echo() -> None:
            for line in proc.stderr:  # until the stage exits
                log.write(line)
                if line.startswith("chaos:"):
                    stream.write(line)
                    stream.flush()
        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        try:
            proc.wait(timeout=STAGE_TIMEOUT_S[mode])
        except subprocess.TimeoutExpired:  # bounded: the stage overran; it stops what it started
            _stop(proc)
        except BaseException:   # Ctrl-C here: the stage too
            _stop(proc)
            raise
        reader.join(timeout=10)
    result = json.loads(out.read_text()) if out.exists() else {"kind": kind, "phases": []}
    result.update(kind=kind, returncode=proc.returncode, log=str(log_path), wall_s=round(time.monotonic() - t0, 1))
    if proc.returncode and not result.get("error"):
        result["error"] = f"stage {kind} exited with {proc.returncode} (log: {log_path})"
    return result


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM first (the stage stops peakdesk, Ray and Redis in order), then the stage's
    process group (it was started in a session of its own)."""
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.splitlines()[0],
                                epilog="Faults: " + ", ".join(FAULTS))
    p.add_argument("--short", action="store_true", help="CI size: small load, each fault once")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the whole report as JSON")
    p.add_argument("--faults", default=",".join(FAULTS), help="comma-separated subset, in this order [all]")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        p.error(f"--faults: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(FAULTS)}")
    mode = "short" if args.short else "full"
    t0 = time.monotonic()
    stages = []
    with tempfile.TemporaryDirectory(prefix="pd-chaos-") as tmp:
        workdir = Path(tmp)
        local = [f for f in faults if f != "node"]
        if local:
            stages.append(run_stage("local", local, mode, args.seed, workdir))
        if "node" in faults:
            stages.append(run_stage("node", ["node"], mode, args.seed + 100, workdir))
        for stage in stages:   # the logs outlive the temporary directory when something failed
            if stage.get("error") and Path(stage["log"]).exists():
                kept = Path(tempfile.mkdtemp(prefix="pd-chaos-log-")) / Path(stage["log"]).name
                kept.write_bytes(Path(stage["log"]).read_bytes())
                stage["log"] = str(kept)
    phases = [ph for stage in stages for ph in stage.get("phases", [])]
    order = {f: i for i, f in enumerate(faults)}
    phases.sort(key=lambda ph: order.get(ph["fault"], 99))
    missing = [f for f in faults if f not in {ph["fault"] for ph in phases}]
    full = {"mode": mode, "seconds": round(time.monotonic() - t0, 1), "faults": phases,
            "stages": [{k: v for k, v in s.items() if k != "phases"} for s in stages]}
    fail, warn = report.problems(full)
    fail += [f"{f}: did not run" for f in missing]
    full["ok"] = not fail
    print(f"\npeakdesk chaos suite ({mode}) — {full['seconds']:.0f} s on this machine\n")
    print(report.table(phases))
    for w in warn:
        print(f"WARN: {w}")
    for f in fail:
        print(f"FAIL: {f}")
    if not fail:
        print("OK: no fault lost or duplicated a message; every outbox drained into ClickHouse with exactly the "
              "run's events")
    if args.json:
        report.write_json(args.json, full)
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
