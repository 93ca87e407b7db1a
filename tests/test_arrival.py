"""Diversion rules and business hours: pure functions of actors/arrival.py."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.arrival import Facts, check_rules, open_now, route, vip_priority

RULES = [
    {"name": "VIP", "when": {"attr.vip_tier": {"gte": 2}}, "group": "vip", "priority": 1},
    {"when": {"channel": "wechat", "issue_type": {"in": ["refund", "退款"]}}, "group": "aftersales"},
    {"when": {"entry.product_id": "42"}, "group": "presales", "skills": ["appliances"]},
    {"when": {"visit_count": {"lte": 1}, "attr.city": {"contains": "上海"}}, "group": "welcome"},
]


@pytest.mark.parametrize("facts, group, priority, rule", [
    (Facts(attributes={"vip_tier": 3}), "vip", 3, "VIP"),
    (Facts(attributes={"vip_tier": 2}), "vip", 2, "VIP"),
    (Facts(attributes={"vip_tier": "2"}), "vip", 2, "VIP"),
    (Facts(channel="wechat", issue_type="退款"), "aftersales", 0, "rule 2"),
    (Facts(channel="web", issue_type="退款"), "default", 0, ""),
    (Facts(entry={"product_id": "42"}), "presales", 0, "rule 3"),
    (Facts(visit_count=1, attributes={"city": "上海市浦东"}), "welcome", 0, "rule 4"),
    (Facts(visit_count=5, attributes={"city": "上海市浦东"}), "default", 0, ""),
    (Facts(attributes={"vip_tier": "gold"}), "default", 0, ""),
])
def test_the_first_matching_rule_chooses_the_group(facts, group, priority, rule):
    r = route(RULES, facts)
    assert (r.group, r.priority, r.rule) == (group, priority, rule)


def test_a_rule_can_require_skills_and_no_rule_means_the_default():
    assert route(RULES, Facts(entry={"product_id": "42"})).skills == ("appliances",)
    assert route([], Facts(), "presales").group == "presales"


@given(st.one_of(st.integers(-100, 100), st.text(max_size=5), st.none(), st.floats(allow_nan=False)))
def test_vip_priority_is_always_between_0_and_9(tier):
    assert 0 <= vip_priority({"vip_tier": tier}) <= 9


def test_bad_rules_are_named():
    with pytest.raises(ValueError, match=r"rules\[0\].when.colour"):
        check_rules([{"when": {"colour": "red"}, "group": "g"}])
    with pytest.raises(ValueError, match=r"rules\[1\].when.channel: unknown test 'like'"):
        check_rules([{"group": "g"}, {"when": {"channel": {"like": "we%"}}, "group": "g"}])
    with pytest.raises(ValueError, match=r"rules\[0\].group"):
        check_rules([{"when": {}}])
    check_rules(RULES)


HOURS = {"timezone": "Asia/Shanghai", "days": {"mon": [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "18:00"}],
                                               "sat": [{"start": "10:00", "end": "16:00"}]}}


@pytest.mark.parametrize("utc, is_open", [
    ("2026-11-09T01:00:00", True),    # Monday 09:00 in Shanghai
    ("2026-11-09T00:59:00", False),   # 08:59
    ("2026-11-09T04:30:00", False),   # 12:30 lunch
    ("2026-11-09T09:59:00", True),    # 17:59
    ("2026-11-09T10:00:00", False),   # 18:00
    ("2026-11-10T02:00:00", False),   # Tuesday: no hours
    ("2026-11-14T03:00:00", True),    # Saturday 11:00
    ("2026-11-08T17:00:00", False),   # Sunday 17:00 UTC is Monday 01:00 in Shanghai: closed
])
def test_business_hours_are_read_in_the_merchants_time_zone(utc, is_open):
    now = dt.datetime.fromisoformat(utc).replace(tzinfo=dt.timezone.utc)
    assert open_now(HOURS, now) is is_open


def test_no_hours_means_always_open():
    now = dt.datetime(2026, 11, 11, 0, 0, tzinfo=dt.timezone.utc)
    assert open_now(None, now) and open_now({"timezone": "Asia/Shanghai", "days": {}}, now)
