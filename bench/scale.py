"""Throughput with 1, 2 and 4 actor hosts on this machine: runs bench.runtime once per host
count (each in its own process with its own Ray, Redis and chDB) and prints one table.

    python -m bench.scale [--hosts 1 2 4] [--envelopes 100000] [--events 50000]

Hosts are asyncio event loops, one Ray actor each; on a machine with few cores more hosts than
cores share those cores with the gateway, the writer, Redis and Ray's own processes, so the
curve flattens (or dips) once hosts outnumber idle cores: scaling out is for adding machines.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

ROW = re.compile(r"^(?P<label>.+?)\s+(?P<count>\d+)\s+(?P<secs>[\d.]+)\s+(?P<rate>[\d,]+)\s*$")


def one(hosts: int, envelopes: int, events: int) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-m", "bench.runtime", "--hosts", str(hosts), "--envelopes", str(envelopes),
                           "--events", str(events), "--relays", "500", "--hops", "40"],
                          capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        raise SystemExit(f"bench.runtime --hosts {hosts} failed:\n{done.stderr[-2000:]}")
    rates = {}
    for line in done.stdout.splitlines():
        m = ROW.match(line)
        if m:
            rates[m["label"].strip()] = float(m["rate"].replace(",", ""))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--envelopes", type=int, default=100_000)
    p.add_argument("--events", type=int, default=50_000)
    a = p.parse_args()
    results = {}
    for n in a.hosts:
        print(f"  running with {n} host(s)…", flush=True)
        results[n] = one(n, a.envelopes, a.events)
    labels = list(dict.fromkeys(label for r in results.values() for label in r))
    print(f"\n{'per second':<40}" + "".join(f"{f'{n} host' + ('s' if n > 1 else ''):>14}" for n in a.hosts))
    for label in labels:
        print(f"{label:<40}" + "".join(f"{results[n].get(label, float('nan')):>14,.0f}" for n in a.hosts))


if __name__ == "__main__":
    main()
