"""Who gets the next conversation: the assignment rules of a group's queue, as pure functions
over plain values, so the QueueActor (one mailbox: no races) stays small and the rules can be
checked by property-based tests.

Rules (issue 5):
- An agent is *eligible* for a waiting conversation when online, below capacity, and holding
  every skill the conversation requires. Status and capacity are never overridden.
- The queue is ordered by priority (VIP tier: higher first), then arrival. Assignment walks it
  in that order, so a waiting conversation is never overtaken by a later one of the same
  priority for an agent it could have taken.
- Strategies pick among eligible agents: `least_load` (lowest load/capacity), `round_robin`
  (the next one after the last picked, in a stable order), `returning_customer` (the agent who
  served this customer last, if eligible; else least load), `skills` (eligibility does the
  skills; least load among them), `manual` (nobody: agents pick from the queue).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

STRATEGIES = ("least_load", "round_robin", "returning_customer", "skills", "manual")


@dataclass
class AgentSlot:
    agent_id: str
    status: str = "offline"       # online | busy | away | offline
    capacity: int = 0
    load: int = 0
    skills: frozenset[str] = frozenset()

    def eligible_for(self, required: Iterable[str]) -> bool:
        return self.status == "online" and self.load < self.capacity and set(required) <= self.skills


@dataclass(order=True)
class Waiting:
    sort_key: tuple = field(init=False, repr=False)
    session_id: str = field(compare=False)
    priority: int = field(compare=False, default=0)     # VIP tier: higher is served first
    arrival: int = field(compare=False, default=0)      # the queue's own arrival counter
    required_skills: frozenset[str] = field(compare=False, default=frozenset())
    preferred_agent: str | None = field(compare=False, default=None)  # who served this customer last

    def __post_init__(self) -> None:
        self.sort_key = (-self.priority, self.arrival)


@dataclass
class RoundRobin:
    last: str | None = None  # the agent picked last


def pick(strategy: str, agents: dict[str, AgentSlot], entry: Waiting, rr: RoundRobin) -> str | None:
    """The agent for `entry`, or None if nobody eligible (or the strategy is manual)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "manual":
        return None
    eligible = sorted(a.agent_id for a in agents.values() if a.eligible_for(entry.required_skills))
    if not eligible:
        return None
    if strategy == "returning_customer" and entry.preferred_agent in eligible:
        return entry.preferred_agent
    if strategy == "round_robin":
        after = [a for a in eligible if rr.last is None or a > rr.last]
        return (after or eligible)[0]
    return min(eligible, key=lambda a: (agents[a].load / agents[a].capacity, agents[a].load, a))


def assign(strategy: str, agents: dict[str, AgentSlot], waiting: list[Waiting],
           rr: RoundRobin) -> list[tuple[str, str]]:
    """Assign as many waiting conversations as capacity allows, in queue order. Mutates the
    agents' load, the round-robin pointer and `waiting`; returns [(session_id, agent_id)]."""
    done: list[tuple[str, str]] = []
    waiting.sort()
    for entry in list(waiting):
        agent_id = pick(strategy, agents, entry, rr)
        if agent_id is None:
            continue  # nobody for this one (skills, manual): later ones may still fit others
        agents[agent_id].load += 1
        rr.last = agent_id
        waiting.remove(entry)
        done.append((entry.session_id, agent_id))
    return done


@dataclass(frozen=True)
class Overflow:
    """Send new arrivals to `group` while the queue holds more than `max_waiting` or its oldest
    has waited longer than `max_wait_s` (0 disables that limit)."""

    group: str | None = None
    max_waiting: int = 0
    max_wait_s: float = 0.0

    def active(self, waiting: int, oldest_wait_s: float) -> bool:
        if self.group is None:
            return False
        return (self.max_waiting > 0 and waiting > self.max_waiting) or \
               (self.max_wait_s > 0 and oldest_wait_s > self.max_wait_s)
