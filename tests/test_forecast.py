"""storage.forecast: Erlang C staffing, checked against independent computations of the same
quantities (exact factorial formula in fractions, a log-space formula, a queue simulation) and
against the classic worked example (100 calls per half hour, 180 s handle, 80 % in 20 s)."""
from __future__ import annotations

import heapq
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.forecast import (Slot, agents_needed, average_speed_of_answer, erlang_c, plan,
                              service_level)


# ---- independent references -------------------------------------------------------------

def direct_erlang_c(traffic, n) -> Fraction:
    """Textbook form, exact: (A^n/n! · n/(n−A)) / (Σ_{k<n} A^k/k! + A^n/n! · n/(n−A))."""
    a = Fraction(traffic)
    top = a ** n / math.factorial(n) * Fraction(n) / (n - a)
    return top / (sum(a ** k / math.factorial(k) for k in range(n)) + top)


def log_erlang_c(traffic: float, n: int) -> float:
    """Same formula in log space (lgamma + log-sum-exp): no recursion, fine for large n."""
    logs = [k * math.log(traffic) - math.lgamma(k + 1) for k in range(n)]
    top = n * math.log(traffic) - math.lgamma(n + 1) + math.log(n / (n - traffic))
    m = max(max(logs), top)
    denom = sum(math.exp(x - m) for x in logs) + math.exp(top - m)
    return math.exp(top - m) / denom


def simulate_waits(arrivals_per_s, handle_s, agents, customers, seed=7):
    """FCFS M/M/n queue by discrete events: each arrival takes the agent that frees up first."""
    rng = random.Random(seed)
    free_at = [0.0] * agents
    t, waits = 0.0, []
    for _ in range(customers):
        t += rng.expovariate(arrivals_per_s)
        start = max(t, heapq.heappop(free_at))
        waits.append(start - t)
        heapq.heappush(free_at, start + rng.expovariate(1 / handle_s))
    return waits[customers // 10:]  # drop the warm-up


# ---- the worked example: A = 100 × 180 / 1800 = 10 Erlangs -----------------------------

RATE = 100 / 1800  # arrivals per second
HANDLE = 180.0


@pytest.mark.parametrize("n, published", [(11, 0.6821), (12, 0.4494), (13, 0.2853), (14, 0.1741)])
def test_textbook_wait_probabilities_for_10_erlangs(n, published):
    exact = float(direct_erlang_c(10, n))
    assert exact == pytest.approx(published, abs=5e-5)  # the published table is right …
    assert erlang_c(10.0, n) == pytest.approx(exact, rel=1e-12)  # … and so is the recursion


def test_worked_example_service_level_asa_and_agents():
    # by hand from the exact C: SL = 1 − C·exp(−(n − A)·20/180), ASA = C·180/(n − A)
    for n, sl, asa in [(11, 0.3896, 122.78), (12, 0.6402, 40.44), (13, 0.7956, 17.12), (14, 0.8884, 7.84)]:
        c = float(direct_erlang_c(10, n))
        assert service_level(RATE, HANDLE, n, 20) == pytest.approx(1 - c * math.exp(-(n - 10) * 20 / 180), rel=1e-12)
        assert service_level(RATE, HANDLE, n, 20) == pytest.approx(sl, abs=5e-5)
        assert average_speed_of_answer(RATE, HANDLE, n) == pytest.approx(asa, abs=5e-3)
    # 13 agents give 79.6 % (short of 80 %), 14 give 88.8 %: 14 is the answer
    assert agents_needed(RATE, HANDLE, 20, target=0.8) == 14
    assert agents_needed(RATE, HANDLE, 20, target=0.8, max_occupancy=1.0) == 14
    # and with 30 % shrinkage: 14 / 0.7 = 20 exactly (20.000000000000004 in floating point)
    assert agents_needed(RATE, HANDLE, 20, target=0.8, shrinkage=0.3) == 20


def test_formulas_agree_with_a_simulated_queue():
    waits = simulate_waits(RATE, HANDLE, 14, 200_000)
    p_wait = sum(w > 0 for w in waits) / len(waits)
    within = sum(w <= 20 for w in waits) / len(waits)
    assert p_wait == pytest.approx(erlang_c(10.0, 14), abs=0.015)
    assert within == pytest.approx(service_level(RATE, HANDLE, 14, 20), abs=0.015)
    assert sum(waits) / len(waits) == pytest.approx(average_speed_of_answer(RATE, HANDLE, 14), abs=1.0)


# ---- erlang_c ----------------------------------------------------------------------------

@pytest.mark.parametrize("traffic", [0.1, 0.5, 1, 2.5, 7, 10, 19.5])
def test_erlang_c_matches_the_factorial_formula(traffic):
    for n in range(math.floor(traffic) + 1, 31):
        assert erlang_c(float(traffic), n) == pytest.approx(float(direct_erlang_c(traffic, n)), rel=1e-12)


def test_erlang_c_small_cases_by_hand():
    assert erlang_c(1.0, 2) == pytest.approx(1 / 3)  # (1/2·2)/(1 + 1 + 1) = 1/3
    assert erlang_c(0.5, 1) == pytest.approx(0.5)  # one server: P(wait) = utilisation
    assert erlang_c(0.0, 3) == 0.0


def test_erlang_c_is_one_when_agents_do_not_exceed_traffic():
    assert erlang_c(10.0, 10) == 1.0
    assert erlang_c(10.0, 3) == 1.0
    assert erlang_c(0.0, 0) == 1.0


@pytest.mark.parametrize("traffic, n", [(500.0, 520), (2000.0, 2050), (9000.0, 9100)])
def test_erlang_c_is_stable_for_large_traffic(traffic, n):
    c = erlang_c(traffic, n)
    assert 0 < c < 1
    assert c == pytest.approx(log_erlang_c(traffic, n), rel=1e-9)


def test_more_agents_more_service():
    prev_c, prev_sl, prev_asa = 1.0, 0.0, math.inf
    for n in range(10, 40):
        c, sl, asa = erlang_c(10.0, n), service_level(RATE, HANDLE, n, 20), average_speed_of_answer(RATE, HANDLE, n)
        assert c <= prev_c and sl >= prev_sl and asa <= prev_asa
        prev_c, prev_sl, prev_asa = c, sl, asa
    assert prev_sl > 0.999999


def test_no_agents_to_spare():
    assert service_level(RATE, HANDLE, 10, 20) == 0.0
    assert average_speed_of_answer(RATE, HANDLE, 10) == math.inf
    assert service_level(0.0, HANDLE, 0, 20) == 1.0
    assert average_speed_of_answer(0.0, HANDLE, 0) == 0.0


# ---- agents_needed -----------------------------------------------------------------------

def test_zero_traffic_needs_no_agents():
    assert agents_needed(0.0, 300, 30) == 0
    assert agents_needed(0.0, 300, 30, shrinkage=0.5, concurrency=3) == 0


def test_concurrency_divides_the_handle_time():
    alone = agents_needed(0.5, 240, 30, concurrency=1)
    three = agents_needed(0.5, 240, 30, concurrency=3)
    assert three < alone
    assert three == agents_needed(0.5, 80, 30, concurrency=1)


def test_occupancy_cap_binds_at_high_traffic():
    # 1000 Erlangs: 80 % in 20 s needs only ~1010 agents, but at most 85 % occupancy needs 1177
    rate = 1000 / 180
    free = agents_needed(rate, 180, 20, max_occupancy=1.0)
    assert free < 1030 and service_level(rate, 180, free, 20) >= 0.8
    capped = agents_needed(rate, 180, 20, max_occupancy=0.85)
    assert capped == math.ceil(1000 / 0.85) == 1177
    assert 1000 / capped <= 0.85 < 1000 / (capped - 1)
    assert service_level(rate, 180, capped - 1, 20) >= 0.8  # the service level did not bind


def test_occupancy_cap_exact_boundary_is_not_rounded_up():
    # A = 8.5 Erlangs, cap 0.85: 10 agents are exactly at the cap (floating point says 10.000…1)
    assert agents_needed(0.085, 100, 1000, target=0.01, max_occupancy=0.85) == 10


@pytest.mark.parametrize("shrinkage, expected", [(0.0, 14), (0.1, 16), (0.25, 19), (0.3, 20), (0.5, 28)])
def test_shrinkage_rounds_up(shrinkage, expected):
    assert agents_needed(RATE, HANDLE, 20, shrinkage=shrinkage) == expected
    assert expected == math.ceil(round(14 / (1 - shrinkage), 9))


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(0.0005, 20), handle=st.floats(5, 900), within=st.floats(0, 120),
       target=st.floats(0.05, 0.99), concurrency=st.floats(1, 5), occ=st.floats(0.3, 1.0))
def test_answer_is_the_smallest_that_meets_target_and_cap(rate, handle, within, target, concurrency, occ):
    n = agents_needed(rate, handle, within, target=target, concurrency=concurrency, max_occupancy=occ)
    eff = handle / concurrency
    traffic = rate * eff
    assert n >= 1
    assert service_level(rate, eff, n, within) >= target
    assert traffic / n <= occ + 1e-9
    fewer = n - 1
    assert (fewer == 0 or fewer <= traffic or service_level(rate, eff, fewer, within) < target
            or traffic / fewer > occ - 1e-9)


# ---- plan --------------------------------------------------------------------------------

def history48(base=60.0):
    return [(f"{h:02d}:{m:02d}", base * (1 + h / 6)) for h in range(24) for m in (0, 30)]


def test_plan_gives_one_slot_per_history_entry():
    hist = history48()
    slots = plan(hist, handle_s=240, answer_within_s=30, concurrency=3)
    assert [s.start for s in slots] == [label for label, _ in hist]
    for s, (_, arrivals) in zip(slots, hist):
        assert isinstance(s, Slot) and s.arrivals == arrivals and s.handle_s == 240
        assert s.agents == agents_needed(arrivals / 1800, 240, 30, concurrency=3)
        assert s.service_level >= 0.8 and s.occupancy <= 0.85 + 1e-9
        assert s.asa_s == pytest.approx(average_speed_of_answer(arrivals / 1800, 80, s.agents))
    assert slots[-1].agents > slots[0].agents


def test_plan_worked_example_and_empty_slot():
    [busy, quiet] = plan([("20:00", 100), ("04:00", 0)], handle_s=180, answer_within_s=20,
                         concurrency=1, shrinkage=0.3)
    assert busy.agents == 20  # 14 working, 30 % shrinkage
    assert busy.service_level == pytest.approx(0.8884, abs=5e-5)
    assert busy.asa_s == pytest.approx(7.84, abs=5e-3)
    assert busy.occupancy == pytest.approx(10 / 14)
    assert (quiet.agents, quiet.service_level, quiet.asa_s, quiet.occupancy) == (0, 1.0, 0.0, 0.0)


def test_growth_and_bot_deflection_scale_the_arrivals():
    hist = history48()
    kw = dict(handle_s=300, concurrency=2)
    both = plan(hist, growth=3.0, bot_deflection=0.4, **kw)
    same = plan([(label, a * 3.0 * 0.6) for label, a in hist], **kw)
    assert [s.arrivals for s in both] == pytest.approx([s.arrivals for s in same])
    assert [s.agents for s in both] == [s.agents for s in same]
    base = plan(hist, **kw)
    deflected = plan(hist, bot_deflection=0.5, **kw)
    grown = plan(hist, growth=2.0, **kw)
    for b, d, g in zip(base, deflected, grown):
        assert d.arrivals == pytest.approx(b.arrivals / 2) and d.agents <= b.agents
        assert g.arrivals == pytest.approx(b.arrivals * 2) and g.agents >= b.agents
    assert sum(d.agents for d in deflected) < sum(b.agents for b in base) < sum(g.agents for g in grown)


def test_plan_slot_length():
    # the same conversations over a 15-minute slot are twice the rate of a 30-minute one
    [half] = plan([("20:00", 200)], handle_s=180, concurrency=1)
    [quarter] = plan([("20:00", 100)], slot_s=900, handle_s=180, concurrency=1)
    assert half.agents == quarter.agents


# ---- validation --------------------------------------------------------------------------

@pytest.mark.parametrize("call, name", [
    (lambda: erlang_c(-1.0, 3), "traffic_erlangs"),
    (lambda: erlang_c(1.0, -1), "agents"),
    (lambda: service_level(-0.1, 180, 3, 20), "arrivals_per_s"),
    (lambda: service_level(0.1, 0, 3, 20), "handle_s"),
    (lambda: service_level(0.1, 180, 3, -5), "answer_within_s"),
    (lambda: average_speed_of_answer(0.1, -1, 3), "handle_s"),
    (lambda: agents_needed(float("nan"), 180, 20), "arrivals_per_s"),
    (lambda: agents_needed(0.1, 180, 20, target=1.0), "target"),
    (lambda: agents_needed(0.1, 180, 20, target=0), "target"),
    (lambda: agents_needed(0.1, 180, 20, concurrency=0), "concurrency"),
    (lambda: agents_needed(0.1, 180, 20, max_occupancy=1.2), "max_occupancy"),
    (lambda: agents_needed(0.1, 180, 20, shrinkage=1.0), "shrinkage"),
    (lambda: plan([("20:00", -3)], handle_s=180), r"history\[0\] arrivals"),
    (lambda: plan([("20:00", 3), ("20:30",)], handle_s=180), r"history\[1\]"),
    (lambda: plan([(2000, 3)], handle_s=180), r"history\[0\]"),
    (lambda: plan([("20:00", 3)], handle_s=0), "handle_s"),
    (lambda: plan([("20:00", 3)], handle_s=180, slot_s=0), "slot_s"),
    (lambda: plan([("20:00", 3)], handle_s=180, bot_deflection=1.0), "bot_deflection"),
    (lambda: plan([("20:00", 3)], handle_s=180, bot_deflection=-0.1), "bot_deflection"),
    (lambda: plan([("20:00", 3)], handle_s=180, growth=-1), "growth"),
    (lambda: plan([("20:00", 3)], handle_s=180, shrinkage=-0.1), "shrinkage"),
    (lambda: plan([("20:00", 3)], handle_s=180, target=1.5), "target"),
])
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
