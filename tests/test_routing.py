"""Assignment rules, checked as properties over random agents, capacities, skills and arrivals."""
from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.routing import STRATEGIES, AgentSlot, Overflow, RoundRobin, Waiting, assign, pick

SKILLS = ["zh", "en", "vip", "refund"]

agent_st = st.builds(
    AgentSlot,
    agent_id=st.text("abcdefgh", min_size=1, max_size=3),
    status=st.sampled_from(["online", "online", "online", "busy", "away", "offline"]),
    capacity=st.integers(0, 4),
    load=st.integers(0, 3),
    skills=st.frozensets(st.sampled_from(SKILLS), max_size=4),
)
agents_st = st.lists(agent_st, max_size=8, unique_by=lambda a: a.agent_id).map(
    lambda xs: {a.agent_id: AgentSlot(a.agent_id, a.status, a.capacity, min(a.load, a.capacity), a.skills) for a in xs})


@st.composite
def queue_st(draw, with_skills=True):
    n = draw(st.integers(0, 25))
    return [Waiting(session_id=f"s{i}", priority=draw(st.integers(0, 2)), arrival=i,
                    required_skills=draw(st.frozensets(st.sampled_from(SKILLS), max_size=2)) if with_skills else frozenset(),
                    preferred_agent=draw(st.one_of(st.none(), st.text("abcdefgh", min_size=1, max_size=3))))
            for i in range(n)]


@settings(max_examples=300)
@given(agents=agents_st, waiting=queue_st(), strategy=st.sampled_from(STRATEGIES))
def test_capacity_status_and_skills_are_never_overridden(agents, waiting, strategy):
    before = copy.deepcopy(agents)
    wanted = {w.session_id: w for w in waiting}
    for session, agent_id in assign(strategy, agents, waiting, RoundRobin()):
        a = before[agent_id]
        assert a.status == "online"
        assert wanted[session].required_skills <= a.skills
    assert all(a.load <= a.capacity for a in agents.values())
    assert all(agents[i].load >= before[i].load for i in agents)


@settings(max_examples=300)
@given(agents=agents_st, waiting=queue_st(), strategy=st.sampled_from(STRATEGIES))
def test_every_conversation_is_assigned_once_or_still_waiting(agents, waiting, strategy):
    ids = sorted(w.session_id for w in waiting)
    done = assign(strategy, agents, waiting, RoundRobin())
    assigned = [s for s, _ in done]
    assert len(assigned) == len(set(assigned))
    assert sorted(assigned + [w.session_id for w in waiting]) == ids


@settings(max_examples=300)
@given(n_agents=st.integers(1, 6), arrivals=st.integers(0, 60))
def test_round_robin_differs_by_at_most_one_between_eligible_agents(n_agents, arrivals):
    agents = {f"a{i}": AgentSlot(f"a{i}", "online", capacity=1000) for i in range(n_agents)}
    rr, counts = RoundRobin(), {a: 0 for a in agents}
    for i in range(arrivals):
        for _, agent_id in assign("round_robin", agents, [Waiting(f"s{i}", arrival=i)], rr):
            counts[agent_id] += 1
    assert max(counts.values()) - min(counts.values()) <= 1


@settings(max_examples=300)
@given(agents=agents_st, entry=queue_st().filter(bool).map(lambda q: q[0]))
def test_least_load_picks_a_least_loaded_eligible_agent(agents, entry):
    chosen = pick("least_load", agents, entry, RoundRobin())
    eligible = [a for a in agents.values() if a.eligible_for(entry.required_skills)]
    if not eligible:
        assert chosen is None
    else:
        assert agents[chosen].load / agents[chosen].capacity == min(a.load / a.capacity for a in eligible)


@settings(max_examples=300)
@given(agents=agents_st, entry=queue_st().filter(bool).map(lambda q: q[0]))
def test_returning_customer_gets_their_agent_whenever_possible(agents, entry):
    chosen = pick("returning_customer", agents, entry, RoundRobin())
    preferred = agents.get(entry.preferred_agent or "")
    if preferred is not None and preferred.eligible_for(entry.required_skills):
        assert chosen == entry.preferred_agent


@settings(max_examples=300)
@given(agents=agents_st, waiting=queue_st(with_skills=False), strategy=st.sampled_from(STRATEGIES[:-1]))
def test_priority_then_arrival_order_is_kept(agents, waiting, strategy):
    free = sum(a.capacity - a.load for a in agents.values() if a.status == "online")
    order = [w.session_id for w in sorted(waiting)]
    done = [s for s, _ in assign(strategy, agents, waiting, RoundRobin())]
    assert done == order[:min(free, len(order))]  # the first ones in queue order, in that order


def test_manual_assigns_nobody():
    agents = {"a": AgentSlot("a", "online", 5)}
    assert assign("manual", agents, [Waiting("s1")], RoundRobin()) == []


@settings(max_examples=300)
@given(max_waiting=st.integers(0, 20), max_wait=st.floats(0, 600), waiting=st.integers(0, 40),
       oldest=st.floats(0, 1200))
def test_overflow_starts_and_stops_at_the_thresholds(max_waiting, max_wait, waiting, oldest):
    rule = Overflow("overflow", max_waiting, max_wait)
    expected = (max_waiting > 0 and waiting > max_waiting) or (max_wait > 0 and oldest > max_wait)
    assert rule.active(waiting, oldest) == expected
    assert not Overflow(None, max_waiting, max_wait).active(waiting, oldest)
