"""Where a new conversation goes, decided from what is known on arrival — pure functions over
plain values, so the rules can be tested alone and the gateway only gathers the facts.

Diversion rules (分流), per merchant, in order; the first whose every condition holds chooses
the group (and may raise the priority and require skills):

    {"name": "VIP to the VIP desk", "when": {"attr.vip_tier": {"gte": 2}}, "group": "vip", "priority": 2}
    {"when": {"channel": "wechat", "issue_type": {"in": ["refund", "退款"]}}, "group": "aftersales"}
    {"when": {"entry.product_id": "42"}, "group": "presales", "skills": ["appliances"]}

A condition's field is one of `channel`, `issue_type`, `visit_count`, `order_status`,
`entry.<key>` (the widget's entry page, product, ...) or `attr.<key>` (any custom attribute the
merchant pushed); its test is a value (equality) or one of {"eq", "ne", "in", "gte", "lte",
"contains"}. Priority defaults to the customer's VIP tier (attribute `vip_tier`, 0-9).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

OPS = ("eq", "ne", "in", "gte", "lte", "contains")
MAX_PRIORITY = 9
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Route:
    group: str
    priority: int = 0
    skills: tuple[str, ...] = ()
    rule: str = ""                   # the rule that chose it, for the event and reports


@dataclass(frozen=True)
class Facts:
    channel: str = "web"
    issue_type: str = ""
    visit_count: int = 0
    order_status: str = ""
    entry: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        if name.startswith("entry."):
            return self.entry.get(name[6:])
        if name.startswith("attr."):
            return self.attributes.get(name[5:])
        if name in ("channel", "issue_type", "visit_count", "order_status"):
            return getattr(self, name)
        raise ValueError(f"unknown field {name!r}: use channel, issue_type, visit_count, order_status, entry.*, attr.*")


def _test(value: Any, test: Any) -> bool:
    if not isinstance(test, dict):
        return value == test
    for op, want in test.items():
        if op not in OPS:
            raise ValueError(f"unknown test {op!r}: use one of {', '.join(OPS)}")
        if op == "eq" and value != want or op == "ne" and value == want:
            return False
        if op == "in" and value not in want:
            return False
        if op == "contains" and (not isinstance(value, str) or str(want) not in value):
            return False
        if op in ("gte", "lte"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                return False
            if op == "gte" and number < float(want) or op == "lte" and number > float(want):
                return False
    return True


def vip_priority(attributes: dict[str, Any]) -> int:
    try:
        return max(0, min(MAX_PRIORITY, int(attributes.get("vip_tier", 0))))
    except (TypeError, ValueError, OverflowError):
        return 0


def route(rules: list[dict], facts: Facts, default_group: str = "default") -> Route:
    """The group for a new conversation: the first matching rule's, else `default_group`."""
    base = vip_priority(facts.attributes)
    for i, rule in enumerate(rules):
        if all(_test(facts.get(name), test) for name, test in rule.get("when", {}).items()):
            return Route(str(rule["group"]), max(base, min(MAX_PRIORITY, int(rule.get("priority", 0)))),
                         tuple(rule.get("skills", ())), str(rule.get("name") or f"rule {i + 1}"))
    return Route(default_group, base)


def check_rules(rules: list[dict]) -> None:
    """ValueError naming the first bad rule and field; used when a merchant saves them."""
    for i, rule in enumerate(rules):
        if not isinstance(rule.get("group"), str) or not rule["group"]:
            raise ValueError(f"rules[{i}].group: a group id is required")
        for name, test in rule.get("when", {}).items():
            try:
                Facts().get(name)
                _test(None, test)
            except ValueError as exc:
                raise ValueError(f"rules[{i}].when.{name}: {exc}") from None


def open_now(hours: dict | None, now: dt.datetime) -> bool:
    """Within business hours? No hours configured means always open. `hours` is
    {"timezone": "Asia/Shanghai", "days": {"mon": [{"start": "09:00", "end": "18:00"}], ...}}."""
    if not hours or not hours.get("days"):
        return True
    local = now.astimezone(ZoneInfo(hours.get("timezone", "Asia/Shanghai")))
    clock = local.strftime("%H:%M")
    return any(span["start"] <= clock < span["end"] for span in hours["days"].get(_DAYS[local.weekday()], []))
