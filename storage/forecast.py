"""Staffing forecast by Erlang C: how many agents each slot of the next promotion needs.

The model is M/M/n (Erlang C): Poisson arrivals, exponential handle times, n agents, one queue,
nobody abandons. With offered traffic A = arrivals_per_s × handle_s (Erlangs):
- Erlang B via its recursion B(0) = 1, B(n) = A·B(n-1) / (n + A·B(n-1)) — stable for thousands of
  agents, unlike the factorial form A^n/n! — and then Erlang C = n·B / (n − A(1 − B)), the
  probability that an arrival waits (Cooper, "Introduction to Queueing Theory", ch. 3).
- Service level: P(wait <= t) = 1 − C·exp(−(n − A)·t / handle_s).
- Average speed of answer: ASA = C·handle_s / (n − A).
Chat: an agent holding `concurrency` conversations at once is modelled as one server working
`concurrency` times faster (effective handle time handle_s / concurrency) — the usual chat
adjustment; it is optimistic when agents slow down as they juggle more conversations.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

_EPS = 1e-9  # floating-point slack for the ceilings and the occupancy cap (8.5/0.85 is 10, not 10.000…1)


def _check(name: str, value: float, ok: bool, rule: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _erlang_b_steps(traffic: float):
    """Yield (n, Erlang B(n)) for n = 0, 1, 2, … by the recursion above."""
    b, n = 1.0, 0
    while True:
        yield n, b
        n += 1
        b = traffic * b / (n + traffic * b)


def _c_from_b(traffic: float, n: int, b: float) -> float:
    return 1.0 if n <= traffic else n * b / (n - traffic * (1.0 - b))


def erlang_c(traffic_erlangs: float, agents: int) -> float:
    """Probability that an arrival has to wait, with `traffic_erlangs` offered to `agents` agents.

    1.0 when agents <= traffic (the queue grows without bound)."""
    _check("traffic_erlangs", traffic_erlangs, traffic_erlangs >= 0, ">= 0")
    agents = operator.index(agents)
    _check("agents", agents, agents >= 0, ">= 0")
    if agents <= traffic_erlangs:
        return 1.0
    for n, b in _erlang_b_steps(traffic_erlangs):
        if n == agents:
            return _c_from_b(traffic_erlangs, n, b)


def _sl(traffic: float, handle_s: float, n: int, c: float, within_s: float) -> float:
    if traffic == 0:
        return 1.0  # nobody arrives, nobody misses the target
    if n <= traffic:
        return 0.0
    return 1.0 - c * math.exp(-(n - traffic) * within_s / handle_s)


def service_level(arrivals_per_s: float, handle_s: float, agents: int, answer_within_s: float) -> float:
    """Share of contacts answered within `answer_within_s`: 1 − C·exp(−(n − A)·t / handle_s).

    1.0 with no arrivals; 0.0 when agents <= traffic."""
    _check("arrivals_per_s", arrivals_per_s, arrivals_per_s >= 0, ">= 0")
    _check("handle_s", handle_s, handle_s > 0, "> 0")
    _check("answer_within_s", answer_within_s, answer_within_s >= 0, ">= 0")
    traffic = arrivals_per_s * handle_s
    return _sl(traffic, handle_s, agents, erlang_c(traffic, agents), answer_within_s)


def average_speed_of_answer(arrivals_per_s: float, handle_s: float, agents: int) -> float:
    """Mean wait in seconds over all contacts: C·handle_s / (n − A); inf when agents <= traffic."""
    _check("arrivals_per_s", arrivals_per_s, arrivals_per_s >= 0, ">= 0")
    _check("handle_s", handle_s, handle_s > 0, "> 0")
    _check("agents", agents, agents >= 0, ">= 0")
    traffic = arrivals_per_s * handle_s
    if traffic == 0:
        return 0.0
    if agents <= traffic:
        return math.inf
    return erlang_c(traffic, agents) * handle_s / (agents - traffic)


def agents_needed(arrivals_per_s: float, handle_s: float, answer_within_s: float, target: float = 0.8,
                  concurrency: float = 1.0, max_occupancy: float = 0.85, shrinkage: float = 0.0) -> int:
    """Smallest number of agents with service level >= `target` AND occupancy A/n <= `max_occupancy`.

    Chat: the effective handle time is handle_s / concurrency (see the module docstring).
    Shrinkage (breaks, meetings, training) is added last: ceil(n / (1 − shrinkage)).
    Zero arrivals need zero agents."""
    _check("arrivals_per_s", arrivals_per_s, arrivals_per_s >= 0, ">= 0")
    _check("handle_s", handle_s, handle_s > 0, "> 0")
    _check("answer_within_s", answer_within_s, answer_within_s >= 0, ">= 0")
    _check("target", target, 0 < target < 1, "in (0, 1)")
    _check("concurrency", concurrency, concurrency > 0, "> 0")
    _check("max_occupancy", max_occupancy, 0 < max_occupancy <= 1, "in (0, 1]")
    _check("shrinkage", shrinkage, 0 <= shrinkage < 1, "in [0, 1)")
    if arrivals_per_s == 0:
        return 0
    eff_handle = handle_s / concurrency
    traffic = arrivals_per_s * eff_handle
    # No fewer than the occupancy cap allows, and strictly more than the traffic (else C = 1).
    low = max(math.floor(traffic) + 1, math.ceil(traffic / max_occupancy - _EPS))
    for n, b in _erlang_b_steps(traffic):  # one pass of the recursion, checking each n from `low`
        if n >= low and _sl(traffic, eff_handle, n, _c_from_b(traffic, n, b), answer_within_s) >= target:
            return math.ceil(n / (1.0 - shrinkage) - _EPS)


@dataclass
class Slot:
    start: str            # slot label, e.g. "20:00"
    arrivals: float       # expected conversations for people in the slot (after growth and bot)
    handle_s: float       # mean handle time of one conversation
    agents: int           # agents to schedule, shrinkage included
    service_level: float  # the following three for the agents actually working, i.e. without
    asa_s: float          # shrinkage: effective handle time handle_s / concurrency
    occupancy: float


def plan(history: list[tuple[str, float]], slot_s: int = 1800, *, handle_s: float,
         answer_within_s: float = 30, target: float = 0.8, bot_deflection: float = 0.0,
         growth: float = 1.0, concurrency: float = 3.0, max_occupancy: float = 0.85,
         shrinkage: float = 0.0) -> list[Slot]:
    """One Slot per (label, mean arrivals) in `history`, for the next peak.

    Expected arrivals for people = historical arrivals × growth × (1 − bot_deflection); each slot
    lasts `slot_s` seconds. ValueError names the bad argument."""
    _check("slot_s", slot_s, slot_s > 0, "> 0")
    _check("handle_s", handle_s, handle_s > 0, "> 0")
    _check("bot_deflection", bot_deflection, 0 <= bot_deflection < 1, "in [0, 1)")
    _check("growth", growth, growth >= 0, ">= 0")
    kw = dict(answer_within_s=answer_within_s, target=target, concurrency=concurrency,
              max_occupancy=max_occupancy)
    agents_needed(1.0, handle_s, shrinkage=shrinkage, **kw)  # validates the rest up front
    slots = []
    for i, item in enumerate(history):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"history[{i}] must be a (label, arrivals) tuple, got {item!r}")
        _check(f"history[{i}] arrivals", item[1], item[1] >= 0, ">= 0")
        arrivals = item[1] * growth * (1.0 - bot_deflection)
        rate = arrivals / slot_s
        working = agents_needed(rate, handle_s, **kw)  # before shrinkage
        eff_handle, traffic = handle_s / concurrency, rate * handle_s / concurrency
        slots.append(Slot(
            start=item[0], arrivals=arrivals, handle_s=handle_s,
            agents=math.ceil(working / (1.0 - shrinkage) - _EPS),
            service_level=service_level(rate, eff_handle, working, answer_within_s),
            asa_s=average_speed_of_answer(rate, eff_handle, working),
            occupancy=traffic / working if working else 0.0))
    return slots
