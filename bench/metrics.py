"""What a bench run measures: HDR histograms of latencies, counters, and per-second series for
the progress line and the plot. One Metrics object per run, fed by every simulated person (all
on one trio thread: no locks)."""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from hdrh.histogram import HdrHistogram

# 1 µs .. 10 min at 3 significant digits: enough for any latency a run can see.
_LOW_US, _HIGH_US, _DIGITS = 1, 600_000_000, 3


def _histogram() -> HdrHistogram:
    return HdrHistogram(_LOW_US, _HIGH_US, _DIGITS)


def percentiles_ms(h: HdrHistogram) -> dict[str, float]:
    if h.get_total_count() == 0:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    return {"p50": h.get_value_at_percentile(50) / 1000, "p90": h.get_value_at_percentile(90) / 1000,
            "p99": h.get_value_at_percentile(99) / 1000, "max": h.get_max_value() / 1000}


@dataclass
class Second:
    delivered: int = 0
    sent: int = 0
    errors: int = 0
    connections: int = 0
    latency: HdrHistogram = field(default_factory=_histogram)


class Metrics:
    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.t0 = clock()
        self.latency = _histogram()          # customer -> agent and agent -> customer, send to receive
        self.to_agent = _histogram()
        self.to_customer = _histogram()
        self.ack = _histogram()              # send to durable ack
        self.assign_wait = _histogram()      # open to assigned
        self.seconds: dict[int, Second] = defaultdict(Second)
        self.sent = self.delivered = self.acks = self.errors = 0
        self.connections = self.connections_peak = 0
        self.conversations_opened = self.conversations_closed = self.rated = 0
        self.error_kinds: dict[str, int] = defaultdict(int)

    def now(self) -> float:
        return self.clock() - self.t0

    def _second(self) -> Second:
        return self.seconds[int(self.now())]

    def connected(self, delta: int) -> None:
        self.connections += delta
        self.connections_peak = max(self.connections_peak, self.connections)
        self._second().connections = self.connections

    def message_sent(self) -> None:
        self.sent += 1
        self._second().sent += 1

    def acked(self, seconds: float) -> None:
        self.acks += 1
        self.ack.record_value(max(1, int(seconds * 1e6)))

    def message_delivered(self, seconds: float, to_agent: bool) -> None:
        us = max(1, int(seconds * 1e6))
        self.delivered += 1
        self.latency.record_value(us)
        (self.to_agent if to_agent else self.to_customer).record_value(us)
        sec = self._second()
        sec.delivered += 1
        sec.latency.record_value(us)

    def assigned(self, seconds: float) -> None:
        self.assign_wait.record_value(max(1, int(seconds * 1e6)))

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] += 1
        self._second().errors += 1

    def series(self) -> list[dict]:
        """One row per second of the run: what the plot draws."""
        last = max(self.seconds, default=-1)
        rows = []
        for s in range(last + 1):
            sec = self.seconds.get(s, Second())
            rows.append({"second": s, "delivered": sec.delivered, "sent": sec.sent, "errors": sec.errors,
                         "connections": sec.connections, "p99_ms": percentiles_ms(sec.latency)["p99"]})
        return rows
