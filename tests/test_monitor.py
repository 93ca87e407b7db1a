"""Live monitoring and early warnings end to end: a supervisor's websocket gets the live
picture at least every 2 s; an alert rule on a group's longest wait is raised while a customer
waits there and resolved when an agent takes them, each once, as frames and as events; agents
can't watch. The rule evaluation itself is tested on plain pictures."""
from __future__ import annotations

import time

import pytest
import ray
import trio

from gateway.client import connect
from gateway.monitor import firing
from tests.gateway_cluster import Peakdesk
from tests.test_routing_ws import agent, group, online

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("monitor"), "pd-test-monitor", "mo:")
    yield p
    p.stop()


def alert_events(pd: Peakdesk, rule: str, timeout: float = 30) -> list[str]:
    writer = next(iter(pd.cluster.writers.values()))
    deadline = time.monotonic() + timeout
    while True:
        rows = ray.get(writer.query.remote(
            "SELECT type FROM events WHERE merchant_id = 'demo' AND type LIKE 'alert.%'"
            " AND JSONExtractString(payload, 'rule') = {r:String} ORDER BY ts", {"r": rule}))
        types = [r[0] for r in rows]
        if len(types) >= 2 or time.monotonic() > deadline:
            return types
        time.sleep(0.3)


def test_the_supervisor_sees_the_live_picture_and_a_wait_alert_rise_and_clear(pd):
    g = group(pd)
    rule = f"wait-{g}"
    pd.request("PATCH", "/api/v1/merchant", {"settings": {"alerts": [
        {"name": rule, "metric": "longest_wait_s", "op": ">", "value": 1, "group": g}]}}, pd.owner_token)
    _, agent_token = agent(pd, [g])

    async def main():
        async with connect(pd.url, pd.owner_token) as sup, connect(pd.url, pd.visitor_token()) as c:
            await sup.monitor()
            first = await sup.until("live", timeout=5)
            assert {"agents", "queues", "totals", "recent", "alerts"} <= set(first)
            session = await c.open(group=g)
            raised = await sup.until("alert", rule=rule, timeout=10)
            assert raised["state"] == "raised" and raised["value"] > 1 and raised["group"] == g
            live = await sup.until("live", timeout=5)
            assert [a["rule"] for a in live["alerts"]] == [rule]
            queue = next(q for q in live["queues"] if q["group_id"] == g)
            assert queue["waiting"] == 1
            gaps, last = [], time.monotonic()
            for _ in range(3):  # pushed at least every 2 seconds
                await sup.until("live", timeout=5)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()
            assert max(gaps) <= 2.5, gaps
            async with connect(pd.url, agent_token) as a:
                await online(a)
                await a.until("assigned", session=session)
                resolved = await sup.until("alert", rule=rule, timeout=10)
                assert resolved["state"] == "resolved"
                await a.send({"t": "monitor", "on": True})  # agents don't watch the live picture
                assert "supervisors" in (await a.until("error", code="forbidden", timeout=5))["message"]
    trio.run(main)
    assert alert_events(pd, rule) == ["alert.raised", "alert.resolved"]


def test_alert_rules_on_plain_pictures():
    picture = {"totals": {"waiting": 3, "longest_wait_s": 75.0, "vip_waiting": 1, "angry_waiting": 0,
                          "agents_online": 2},
               "queues": [{"group_id": "g1", "waiting": 3, "longest_wait_s": 75.0, "vip_waiting": 1}],
               "recent": {"csat_1h": 3.6, "response_p90_5m_s": None}}
    rules = [{"name": "long", "metric": "longest_wait_s", "op": ">", "value": 60},
             {"name": "vip", "metric": "vip_waiting", "op": ">=", "value": 1, "group": "g1"},
             {"name": "csat", "metric": "csat_1h", "op": "<", "value": 4},
             {"name": "slow", "metric": "response_p90_5m_s", "op": ">", "value": 30},   # unknown now: quiet
             {"name": "other", "metric": "waiting", "op": ">", "value": 0, "group": "g9"},  # no such group
             {"name": "calm", "metric": "waiting", "op": ">", "value": 10}]
    assert firing(rules, picture) == {"long": 75.0, "vip": 1, "csat": 3.6}
