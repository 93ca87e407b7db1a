"""How big each phase's surge is. `short` is for CI on a 2-core machine (the whole suite well
under 4 minutes); `full` is a longer, bigger surge for the numbers in a release note."""
from __future__ import annotations

from bench.profiles import Plan

MODES = {
    "short": {
        "plan": Plan(customers=4, agents=2, agent_capacity=10, messages=3, customer_think_s=0.3, agent_think_s=0.2,
                     surge_factor=3.0, csat_rate=0.8),
        "profile": "surge",
        "duration": 8.0,        # seconds of arrivals per phase
        "kill_at": 3.0,         # seconds into the arrivals (the surge's ramp)
        "grace": 25.0,
        "wind_down": 30.0,
        "redis_down_s": 1.0,
        "drain_wait": 60.0,
        "events_wait": 30.0,
    },
    "full": {
        "plan": Plan(customers=40, agents=6, agent_capacity=15, messages=6, customer_think_s=2.0, agent_think_s=1.5,
                     surge_factor=5.0, csat_rate=0.8),
        "profile": "surge",
        "duration": 60.0,
        "kill_at": 15.0,        # on the surge's plateau (midnight + ramp: 9-12 s, plateau to 18 s)
        "grace": 60.0,
        "wind_down": 45.0,
        "redis_down_s": 3.0,
        "drain_wait": 120.0,
        "events_wait": 60.0,
    },
}
