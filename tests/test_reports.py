"""Every report against hand-computed values on a small synthetic day of events in real chDB:
two days around midnight in Asia/Shanghai (UTC+8) so the time-zone edge shows, an abandoned
customer, a bot conversation it resolved and one it handed over, agents logging in and out,
and another merchant whose events must never appear."""
from __future__ import annotations

import asyncio
import datetime as dt
import itertools

import pytest

from storage.events import Event
from storage.reports import Params, ReportError, run

pytest_plugins = ["tests.storage_fixtures"]
_seq = itertools.count(1)


def at(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def ev(type_: str, when: str, session: str = "", merchant: str = "m1", **fields) -> Event:
    payload = fields.pop("payload", {})
    return Event(merchant_id=merchant, type=type_, actor_key=f"session:{merchant}:{session or 'x'}", seq=next(_seq),
                 session_id=session, channel="web", ts=at(when), payload=payload, **fields)


def customer(text="在吗"):
    return {"kind": "text", "content": {"text": text}, "from": {"kind": "visitor", "id": "v1"}}


def agent(who, **extra):
    return {"kind": "text", "content": {"text": "您好"}, "from": {"kind": "agent", "id": who}, **extra}


EVENTS = [
    # S1: 2026-11-11 00:30 in Shanghai (16:30 UTC the day before), served by a1 in g1
    ev("session.created", "2026-11-10T16:30:00", "s1", group_id="g1", payload={"issue_type": "shipping", "priority": 0}),
    ev("queue.entered", "2026-11-10T16:30:00", "s1", group_id="g1"),
    ev("message.sent", "2026-11-10T16:30:05", "s1", group_id="g1", payload=customer()),
    ev("session.assigned", "2026-11-10T16:30:20", "s1", group_id="g1", agent_id="a1", payload={"wait_ms": 20000}),
    ev("message.sent", "2026-11-10T16:30:30", "s1", group_id="g1", agent_id="a1",
       payload=agent("a1", response_ms=25000, first_response=True)),
    ev("message.sent", "2026-11-10T16:31:00", "s1", group_id="g1", agent_id="a1", payload=customer("还有个问题")),
    ev("message.sent", "2026-11-10T16:31:10", "s1", group_id="g1", agent_id="a1", payload=agent("a1", response_ms=10000)),
    ev("session.closed", "2026-11-10T16:40:00", "s1", group_id="g1", agent_id="a1",
       payload={"by": "agent", "from_status": "assigned", "handle_s": 580.0}),
    ev("csat.rated", "2026-11-10T16:41:00", "s1", group_id="g1", agent_id="a1", payload={"score": 5, "comment": "很好 great"}),
    # S2: 2026-11-10 23:50 in Shanghai; left the g2 queue after 2 minutes
    ev("session.created", "2026-11-10T15:50:00", "s2", group_id="g2", payload={"issue_type": "refund"}),
    ev("queue.entered", "2026-11-10T15:50:00", "s2", group_id="g2"),
    ev("session.closed", "2026-11-10T15:52:00", "s2", group_id="g2",
       payload={"by": "customer", "from_status": "queued", "handle_s": 0.0, "wait_ms": 120000}),
    # S3: the bot answered and the customer left happy (resolved)
    ev("session.created", "2026-11-11T02:00:00", "s3", group_id="g1", payload={"bot": True}),
    ev("bot.answered", "2026-11-11T02:00:03", "s3", group_id="g1", payload={"reason": "match", "entry_id": "refund-time"}),
    ev("message.sent", "2026-11-11T02:00:03", "s3", group_id="g1",
       payload={"kind": "text", "content": {"text": "1-3 天"}, "from": {"kind": "bot", "id": "bot"}}),
    ev("session.closed", "2026-11-11T02:05:00", "s3", group_id="g1", payload={"by": "customer", "from_status": "bot"}),
    # S4: the bot handed an angry customer over; a2 served them
    ev("session.created", "2026-11-11T03:00:00", "s4", group_id="g1", payload={"bot": True, "issue_type": "refund"}),
    ev("bot.handoff", "2026-11-11T03:00:10", "s4", group_id="g1", payload={"reason": "angry", "priority": 8}),
    ev("queue.entered", "2026-11-11T03:00:10", "s4", group_id="g1"),
    ev("session.assigned", "2026-11-11T03:00:15", "s4", group_id="g1", agent_id="a2", payload={"wait_ms": 5000}),
    ev("message.sent", "2026-11-11T03:00:18", "s4", group_id="g1", agent_id="a2",
       payload=agent("a2", response_ms=8000, first_response=True)),
    ev("session.closed", "2026-11-11T03:01:55", "s4", group_id="g1", agent_id="a2",
       payload={"by": "agent", "from_status": "assigned", "handle_s": 100.0}),
    ev("csat.rated", "2026-11-11T03:02:00", "s4", group_id="g1", agent_id="a2", payload={"score": 2, "comment": "slow"}),
    # agents logging in and out
    ev("agent.status", "2026-11-10T16:00:00", agent_id="a1", payload={"status": "online"}),
    ev("agent.status", "2026-11-10T16:30:00", agent_id="a1", payload={"status": "busy"}),
    ev("agent.status", "2026-11-10T17:00:00", agent_id="a1", payload={"status": "offline"}),
    ev("agent.status", "2026-11-11T02:30:00", agent_id="a2", payload={"status": "online"}),
    # another merchant's conversation, at the same time: never in m1's reports
    ev("session.created", "2026-11-11T02:00:00", "o1", merchant="m2", group_id="g1", payload={"bot": True}),
    ev("session.assigned", "2026-11-11T02:00:01", "o1", merchant="m2", group_id="g1", agent_id="a1",
       payload={"wait_ms": 999000}),
    ev("csat.rated", "2026-11-11T02:01:00", "o1", merchant="m2", group_id="g1", agent_id="a1", payload={"score": 1}),
]


@pytest.fixture
def query(sink):
    sink.insert(EVENTS)

    async def q(sql, parameters):
        return sink.query(sql, parameters)
    return q


def report(query, name, tz="Asia/Shanghai", by="day", start="2026-11-10", end="2026-11-12", merchant="m1") -> dict:
    out = asyncio.run(run(query, name, Params.parse(merchant, start, end, tz, by)))
    return {"columns": out["columns"], "rows": out["rows"]}


def as_dicts(out: dict) -> list[dict]:
    return [dict(zip(out["columns"], r)) for r in out["rows"]]


def test_volume_by_day_follows_the_merchants_time_zone(query):
    shanghai = as_dicts(report(query, "volume"))
    assert [(r["bucket"], r["conversations"], r["started_with_bot"], r["queued"], r["assigned"], r["closed"],
             r["abandoned"]) for r in shanghai] == [("2026-11-10 00:00", 1, 0, 1, 0, 1, 1),
                                                    ("2026-11-11 00:00", 3, 2, 2, 2, 3, 0)]
    utc = as_dicts(report(query, "volume", tz="UTC", start="2026-11-10", end="2026-11-12"))
    assert [(r["bucket"], r["conversations"]) for r in utc] == [("2026-11-10 00:00", 2), ("2026-11-11 00:00", 2)]
    hourly = as_dicts(report(query, "volume", by="hour", start="2026-11-11T00:00", end="2026-11-11T01:00"))
    assert [(r["bucket"], r["conversations"]) for r in hourly] == [("2026-11-11 00:00", 1)]
    weekly = as_dicts(report(query, "volume", by="week"))
    assert [(r["bucket"], r["conversations"]) for r in weekly] == [("2026-11-09", 4)]  # Monday of that week


def test_response_handle_and_waiting_times(query):
    (resp,) = as_dicts(report(query, "response_times", start="2026-11-11", end="2026-11-12"))
    assert (resp["first_responses"], resp["first_response_avg_s"], resp["responses"]) == (2, 16.5, 3)
    assert resp["response_avg_s"] == pytest.approx(14.33, abs=0.01)
    (handled,) = as_dicts(report(query, "handle_time", start="2026-11-11", end="2026-11-12"))
    assert (handled["handled"], handled["handle_avg_s"]) == (2, 340.0)
    waits = as_dicts(report(query, "waiting"))
    assert [(w["bucket"], w["served"], w["wait_avg_s"], w["abandoned"], w["abandoned_wait_avg_s"], w["abandonment_rate"])
            for w in waits] == [("2026-11-10 00:00", 0, None, 1, 120.0, 1.0), ("2026-11-11 00:00", 2, 12.5, 0, None, 0.0)]


def test_abandonment_against_how_long_customers_waited(query):
    bands = {r["waited"]: (r["served"], r["abandoned"], r["abandonment_rate"])
             for r in as_dicts(report(query, "abandonment_by_wait"))}
    assert bands == {"0-10s": (1, 0, 0.0), "10-30s": (1, 0, 0.0), "30-60s": (0, 0, 0.0), "60-120s": (0, 0, 0.0),
                     "120-300s": (0, 1, 1.0), "300s+": (0, 0, 0.0)}


def test_agents_workload_csat_and_time_logged_in(query):
    rows = {r["agent_id"]: r for r in as_dicts(report(query, "agents"))}
    a1, a2 = rows["a1"], rows["a2"]
    assert (a1["conversations"], a1["messages"], a1["first_response_avg_s"], a1["closed"], a1["handle_avg_s"],
            a1["ratings"], a1["csat_avg"], a1["online_s"]) == (1, 2, 25.0, 1, 580.0, 1, 5.0, 3600.0)
    # a2 logged in at 10:30 Shanghai and never out: until the end of the range (the 12th, 00:00)
    assert (a2["conversations"], a2["csat_avg"], a2["online_s"]) == (1, 2.0, 13.5 * 3600)
    assert set(rows) == {"a1", "a2"}


def test_groups_issue_types_and_channels(query):
    groups = {r["group_id"]: r for r in as_dicts(report(query, "groups"))}
    assert (groups["g1"]["queued"], groups["g1"]["served"], groups["g1"]["abandoned"]) == (2, 2, 0)
    assert (groups["g2"]["queued"], groups["g2"]["served"], groups["g2"]["abandoned"]) == (1, 0, 1)
    kinds = {(r["kind"], r["name"]): (r["count"], r["share"]) for r in as_dicts(report(query, "issue_types"))}
    assert kinds == {("issue_type", "refund"): (2, 0.5), ("issue_type", "shipping"): (1, 0.25),
                     ("issue_type", "(none)"): (1, 0.25), ("kb_entry", "refund-time"): (1, 1.0)}
    (day,) = as_dicts(report(query, "channels", start="2026-11-11", end="2026-11-12"))
    assert (day["channel"], day["messages"], day["from_customers"], day["from_agents"], day["from_bot"]) == ("web", 6, 2, 3, 1)


def test_bot_resolution_and_handover_reasons(query):
    (day,) = as_dicts(report(query, "bot", start="2026-11-11", end="2026-11-12"))
    assert (day["bot_conversations"], day["resolved"], day["handed_over"], day["resolution_rate"]) == (2, 1, 1, 0.5)
    assert report(query, "bot_handoffs")["rows"] == [["angry", 1, 1.0]]


def test_csat_distribution_and_comments(query):
    assert report(query, "csat")["rows"] == [[5, 1, 0.5], [4, 0, 0.0], [3, 0, 0.0], [2, 1, 0.5], [1, 0, 0.0]]
    comments = as_dicts(report(query, "csat_comments"))
    assert [(c["at"], c["agent_id"], c["score"], c["comment"]) for c in comments] == [
        ("2026-11-11 11:02", "a2", 2, "slow"), ("2026-11-11 00:41", "a1", 5, "很好 great")]


def test_staffing_plans_agents_per_half_hour_from_history_with_the_bots_deflection(query):
    from storage.forecast import agents_needed

    out = asyncio.run(run(query, "staffing", Params.parse("m1", "2026-11-10", "2026-11-12", "Asia/Shanghai", "day",
                                                          options={"growth": "10", "answer_within_s": "30"})))
    rows = {r[0]: dict(zip(out["columns"], r)) for r in out["rows"]}
    assert len(rows) == 48 and rows["00:00"]["agents"] == 0
    # 4 conversations in 2 days, one at 00:30, 23:30, 10:00 and 11:00 local; the bot closed 1 of 4
    slot = rows["00:30"]
    assert slot["bot_deflection"] == 0.25 and slot["handle_s"] == 340.0
    assert slot["arrivals"] == pytest.approx(0.5 * 10 * 0.75, abs=0.01)
    assert slot["agents"] == agents_needed(3.75 / 1800, 340.0, 30, concurrency=3.0) >= 1
    assert {s for s, r in rows.items() if r["agents"]} == {"00:30", "23:30", "10:00", "11:00"}


def test_another_merchant_sees_only_its_own(query):
    (row,) = as_dicts(report(query, "volume", merchant="m2"))
    assert row["conversations"] == 1
    assert as_dicts(report(query, "agents", merchant="m2"))[0]["csat_avg"] == 1.0
    assert report(query, "volume", merchant="nobody")["rows"] == []


@pytest.mark.parametrize("kwargs, named", [
    ({"tz": "Mars/Olympus"}, "tz"), ({"by": "minute"}, "by"), ({"start": "yesterday"}, "from"),
    ({"start": "2026-11-12", "end": "2026-11-10"}, "from"), ({"start": "2024-01-01", "end": "2026-01-01"}, "to"),
    ({"options": {"growth": "lots"}}, "growth"), ({"options": {"target": "1.5"}}, "target"),
])
def test_bad_parameters_name_what_is_wrong(kwargs, named):
    args = {"start": "2026-11-10", "end": "2026-11-12", "tz": "UTC", "by": "day", "options": {}, **kwargs}
    with pytest.raises(ReportError, match=f"^{named}:"):
        Params.parse("m1", args["start"], args["end"], args["tz"], args["by"], options=args["options"])


def test_an_unknown_report_is_named(query):
    with pytest.raises(ReportError, match="report: unknown report 'nps'"):
        asyncio.run(run(query, "nps", Params.parse("m1", None, None, None, None)))


def test_tickets_per_department_opened_done_escalated_and_time_to_done(sink):
    def tk(type_, when, dept, tid, merchant="m3", **payload):
        return ev(type_, when, merchant=merchant, group_id=dept, payload={"ticket_id": tid, **payload})
    sink.insert([
        tk("ticket.created", "2026-11-11T01:00:00", "after_sales", "t1"),
        tk("ticket.updated", "2026-11-11T02:00:00", "after_sales", "t1", changes={"assignee": ["", "a1"]}, done=False),
        tk("ticket.updated", "2026-11-11T03:00:00", "after_sales", "t1", changes={"status": ["in_progress", "resolved"]},
           done=True, age_ms=2 * 3600_000),
        tk("ticket.created", "2026-11-11T01:00:00", "after_sales", "t2"),
        tk("ticket.sla_reminder", "2026-11-11T04:00:00", "after_sales", "t2"),
        tk("ticket.escalated", "2026-11-11T05:00:00", "finance", "t2"),
        tk("ticket.updated", "2026-11-11T09:00:00", "finance", "t2", changes={"status": ["in_progress", "closed"]},
           done=True, age_ms=8 * 3600_000),
        tk("ticket.created", "2026-11-11T01:00:00", "after_sales", "o1", merchant="m4"),   # another merchant's
    ])

    async def q(sql, parameters):
        return sink.query(sql, parameters)
    rows = {r["department"]: r for r in as_dicts(report(q, "tickets", merchant="m3"))}
    assert rows["after_sales"] == {"department": "after_sales", "opened": 2, "done": 1, "escalated": 0, "reminded": 1,
                                   "time_to_done_avg_h": 2.0, "time_to_done_p90_h": 2.0}
    assert (rows["finance"]["opened"], rows["finance"]["done"], rows["finance"]["escalated"]) == (0, 1, 1)
    assert rows["finance"]["time_to_done_avg_h"] == 8.0
    assert [r["opened"] for r in as_dicts(report(q, "tickets", merchant="m4"))] == [1]
