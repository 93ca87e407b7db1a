"""Load shapes for `peakdesk bench`: how many customers arrive per second over a run, and when
(a Poisson process whose rate follows the profile).

- `steady`: a constant rate that keeps `customers` conversations live (Little's law: rate =
  live conversations / the length of one).
- `surge`: Double 11 at midnight — the evening's base rate, a steep ramp to `surge_factor` times
  it in the run's first minutes past "midnight", a short plateau, then a long exponential decay
  towards twice the base (orders keep coming all night). Shaped after published Double-11
  order curves: the peak minute holds several times the hour's average.
- `soak`: the steady rate for a long time, with a gentle ±20 % daily-like wave, to find leaks.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

PROFILES = ("steady", "surge", "soak")


@dataclass(frozen=True)
class Plan:
    """What one simulated conversation looks like, and how many there are."""

    customers: int = 100             # live conversations at the base rate
    agents: int = 10
    agent_capacity: int = 20         # conversations each simulated agent takes at once
    messages: int = 6                # customer messages per conversation (each answered)
    customer_think_s: float = 3.0    # a customer's pause before the next message
    agent_think_s: float = 2.0       # an agent's pause before answering
    message_bytes: int = 60          # size of each message's text
    surge_factor: float = 5.0
    csat_rate: float = 0.8           # share of customers who rate

    @property
    def conversation_s(self) -> float:
        return self.messages * (self.customer_think_s + self.agent_think_s) + 1.0

    @property
    def base_rate(self) -> float:
        """Arrivals per second that keep `customers` conversations live."""
        return self.customers / self.conversation_s


def rate_curve(profile: str, plan: Plan, duration: float) -> Callable[[float], float]:
    """Arrivals per second at second t of the run."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    base = plan.base_rate
    if profile == "steady":
        return lambda t: base
    if profile == "soak":
        return lambda t: base * (1 + 0.2 * math.sin(2 * math.pi * t / max(duration, 1)))
    midnight, ramp, hold = 0.15 * duration, 0.05 * duration, 0.1 * duration
    peak = base * plan.surge_factor

    def surge(t: float) -> float:
        if t < midnight:
            return base
        if t < midnight + ramp:
            return base + (peak - base) * (t - midnight) / ramp
        if t < midnight + ramp + hold:
            return peak
        decay_t = (t - midnight - ramp - hold) / max(duration * 0.2, 1)
        return 2 * base + (peak - 2 * base) * math.exp(-decay_t)
    return surge


def arrivals(rate: Callable[[float], float], duration: float, rng: random.Random,
             limit: int = 1_000_000) -> list[float]:
    """Arrival times of a Poisson process with time-varying rate (thinning), bounded in count."""
    peak = max(rate(duration * i / 1000) for i in range(1001)) or 0.0
    if peak <= 0:
        return []
    times, t = [], 0.0
    while len(times) < limit:
        t += rng.expovariate(peak)
        if t >= duration:
            break
        if rng.random() * peak <= rate(t):
            times.append(t)
    return times
