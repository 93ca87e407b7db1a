"""`peakdesk bench`: its load shapes and verification as pure logic, and a real smoke run (with
the echo baseline) against a whole peakdesk on Ray, Redis and chDB."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from bench.command import verdict
from bench.people import Ledger
from bench.profiles import Plan, arrivals, rate_curve
from bench.verify import compare_events, delivery, expected_events
from tests.gateway_cluster import Peakdesk

ROOT = Path(__file__).parent.parent
PLAN = Plan(customers=100, messages=6, customer_think_s=3, agent_think_s=2)


def test_steady_keeps_the_asked_for_conversations_live():
    rate = rate_curve("steady", PLAN, 600)
    assert rate(0) == rate(300) == pytest.approx(100 / PLAN.conversation_s)


def test_surge_ramps_to_its_factor_at_midnight_then_decays_towards_twice_the_base():
    rate, base = rate_curve("surge", PLAN, 1000), PLAN.base_rate
    assert rate(100) == pytest.approx(base)                        # the evening
    assert rate(210) == pytest.approx(5 * base)                    # the midnight plateau
    assert rate(400) < rate(320) < 5 * base and rate(999) > 2 * base
    assert rate(999) < 2.5 * base


def test_arrivals_follow_the_rate_and_stay_bounded():
    times = arrivals(rate_curve("steady", PLAN, 1000), 1000, random.Random(7))
    expected = PLAN.base_rate * 1000
    assert abs(len(times) - expected) < 4 * expected ** 0.5        # Poisson: within 4 sigma
    assert times == sorted(times) and all(0 <= t < 1000 for t in times)
    assert len(arrivals(rate_curve("steady", PLAN, 1000), 1000, random.Random(7), limit=10)) == 10
    with pytest.raises(ValueError, match="profile must be one of"):
        rate_curve("flash", PLAN, 10)


def _ledger() -> Ledger:
    ledger = Ledger()
    c = ledger.open("s1")
    c.customer_acked, c.agent_acked = {1, 3}, {2, 4}
    c.to_agent.update({1: 1, 3: 1})
    c.to_customer.update({2: 1, 4: 1})
    c.assigned = c.closed = c.invited = c.rated = True
    return ledger


def test_a_clean_run_has_nothing_lost_or_duplicated_and_expects_each_event():
    ledger = _ledger()
    assert delivery(ledger) == {"acked": 4, "delivered": 4, "lost": 0, "duplicated": 0}
    assert expected_events(ledger) == Counter({"session.created": 1, "queue.entered": 1, "session.assigned": 1,
                                               "queue.left": 1, "message.sent": 4, "session.closed": 1,
                                               "csat.invited": 1, "csat.rated": 1})


def test_loss_and_duplicates_are_counted():
    ledger = _ledger()
    conv = ledger["s1"]
    del conv.to_customer[4]          # acked to the agent, never reached the customer
    conv.to_agent[1] += 1            # shown twice
    ledger.repeats = 2               # dropped twice by a client
    assert delivery(ledger) == {"acked": 4, "delivered": 3, "lost": 1, "duplicated": 3}


def test_events_that_differ_are_named():
    want = Counter({"message.sent": 4, "session.closed": 1})
    assert compare_events(want, {"message.sent": 4, "session.closed": 1}) == {}
    assert compare_events(want, {"message.sent": 3, "session.closed": 1, "x": 1}) == {
        "message.sent": (4, 3), "x": (0, 1)}


def _summary(**over) -> dict:
    return {"lost": 0, "duplicated": 0, "events_differences": {}, "events_copies": 0,
            "conversations": {"opened": 1, "closed": 1, "rated": 1}, **over}


@pytest.mark.parametrize("over, ok", [({}, True), ({"lost": 1}, False), ({"duplicated": 2}, False),
                                      ({"events_differences": {"message.sent": [4, 3]}}, False),
                                      ({"events_copies": 1}, False),
                                      ({"conversations": {"opened": 3, "closed": 0, "rated": 0}}, False),
                                      ({"baseline": {"peakdesk_lost": 1, "peakdesk_duplicated": 0}}, False)])
def test_the_exit_status_fails_on_any_loss_duplicate_or_event_difference(over, ok, capsys):
    assert verdict(_summary(**over)) == (0 if ok else 1)
    assert ("OK:" if ok else "FAIL:") in capsys.readouterr().out


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    # as an operator starts it for a bench: a closed loop sends far more than a person's 20 frames/s
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("bench"), "pd-test-bench", "bn:", frames_per_s=1000)
    yield p
    p.stop()


@pytest.mark.timeout(240)
def test_smoke_run_with_the_echo_baseline_passes_and_writes_its_json_and_plot(pd, tmp_path):
    out, plot = tmp_path / "run.json", tmp_path / "run.png"
    proc = subprocess.run(
        [sys.executable, "-c", "import cli; cli.main()", "bench", "--url", pd.url, "--smoke", "--baseline", "echo",
         "--saturation-seconds", "2", "--saturation-connections", "4", "--data-dir", str(pd.settings.data_dir),
         "--json", str(out), "--plot", str(plot)],
        cwd=ROOT, capture_output=True, text=True, timeout=200, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    s = json.loads(out.read_text())
    for key in ("messages_sent", "messages_delivered", "lost", "duplicated", "throughput_msgs_per_s", "latency_ms",
                "assign_wait_ms", "connections_peak", "events_expected", "events_in_clickhouse", "baseline"):
        assert key in s, key
    assert s["lost"] == s["duplicated"] == 0 and s["messages_delivered"] == s["messages_sent"] > 0
    assert s["events_expected"] == s["events_in_clickhouse"] > 0
    assert set(s["latency_ms"]) == {"p50", "p90", "p99", "max"} and set(s["assign_wait_ms"]) >= {"p50", "p99"}
    assert s["baseline"]["throughput_msgs_per_s"] > 0 and s["baseline"]["ratio"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "OK: every message delivered exactly once" in proc.stdout


def test_bad_flags_are_named_and_start_nothing(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "bench", "--url", "http://x", "--smoke",
                           "--data-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--url" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", "import cli; cli.main()", "bench", "--smoke", "--data-dir",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "demo-login.txt" in proc.stderr


def test_the_tickets_benchmark_runs_against_a_given_redis(redis_server):
    out = subprocess.run([sys.executable, "-m", "bench.tickets", "--tickets", "40", "--merchants", "2",
                          "--redis-url", redis_server.url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for line in ("create:", "update:", "comment:", "sweep:", "webhook deliveries queued"):
        assert line in out.stdout, out.stdout
    assert "160 webhook deliveries queued (1.00 per change)" in out.stdout   # every change, one delivery
