"""How a bench run shows itself: a progress bar while it runs, a summary table at the end, the
JSON summary, and a plot of throughput and latency over time."""
from __future__ import annotations

import sys
from pathlib import Path

import orjson

from .metrics import Metrics, percentiles_ms

BAR = 30


def progress(duration: float, stream=sys.stderr):
    """A callback drawing one line, once a second: elapsed, live connections, rates, p99."""
    def draw(metrics: Metrics, planned: int) -> None:
        t = metrics.now()
        done = min(1.0, t / duration) if duration else 1.0
        last = metrics.seconds.get(int(t) - 1)
        rate = last.delivered if last else 0
        p99 = percentiles_ms(last.latency)["p99"] if last else 0.0
        bar = "#" * int(done * BAR) + "-" * (BAR - int(done * BAR))
        stream.write(f"\r[{bar}] {t:5.0f}s  live {metrics.connections:5d}  opened {metrics.conversations_opened:6d}/"
                     f"{planned}  delivered/s {rate:6d}  p99 {p99:7.1f} ms  errors {metrics.errors:4d} ")
        stream.flush()
    return draw


def table(s: dict) -> str:
    lat, back, to_a = s["latency_ms"], s["latency_to_customer_ms"], s["latency_to_agent_ms"]
    rows = [
        ("messages sent / acked / delivered", f"{s['messages_sent']} / {s['messages_acked']} / {s['messages_delivered']}"),
        ("lost / duplicated", f"{s['lost']} / {s['duplicated']}"),
        ("throughput (delivered msgs/s)", f"{s['throughput_msgs_per_s']:,.1f}"),
        ("latency end to end p50/p90/p99/max ms", "/".join(f"{lat[k]:.1f}" for k in ("p50", "p90", "p99", "max"))),
        ("  customer -> agent p50/p99 ms", f"{to_a['p50']:.1f} / {to_a['p99']:.1f}"),
        ("  agent -> customer p50/p99 ms", f"{back['p50']:.1f} / {back['p99']:.1f}"),
        ("ack p50/p99 ms", f"{s['ack_ms']['p50']:.1f} / {s['ack_ms']['p99']:.1f}"),
        ("assignment wait p50/p99 ms", f"{s['assign_wait_ms']['p50']:.1f} / {s['assign_wait_ms']['p99']:.1f}"),
        ("connections peak", str(s["connections_peak"])),
        ("conversations opened / closed / rated", "{opened} / {closed} / {rated}".format(**s["conversations"])),
        ("errors", f"{s['errors']} {s['error_kinds'] or ''}"),
        ("events expected / in ClickHouse", f"{s['events_expected']} / {s['events_in_clickhouse']}"
                                            + (f"  differ: {s['events_differences']}" if s["events_differences"] else "")),
    ]
    if "baseline" in s:
        b = s["baseline"]
        rows.append(("saturation: peakdesk / echo msgs/s", f"{b['peakdesk_msgs_per_s']:,.0f} / "
                                                           f"{b['throughput_msgs_per_s']:,.0f}  (ratio {b['ratio']:.2f})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_json(path: Path, s: dict) -> None:
    Path(path).write_bytes(orjson.dumps(s, option=orjson.OPT_INDENT_2))


def plot(path: Path, s: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = s["per_second"]
    t = [r["second"] for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(10, 6))
    top.plot(t, [r["delivered"] for r in rows], label="delivered msgs/s")
    top.plot(t, [r["connections"] for r in rows], label="live connections", alpha=0.6)
    top.legend(loc="upper left")
    top.set_title(f"peakdesk bench — lost {s['lost']}, duplicated {s['duplicated']}, "
                  f"p99 {s['latency_ms']['p99']:.0f} ms")
    bottom.plot(t, [r["p99_ms"] for r in rows], color="tab:red", label="p99 latency (ms)")
    bottom.set_xlabel("second of the run")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
