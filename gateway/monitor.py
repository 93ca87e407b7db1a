"""Live monitoring and early warnings (预警): every 2 seconds, for each merchant with a
supervisor watching on this gateway (`{"t": "monitor", "on": true}`), the live picture
(gateway/live.py) is pushed as a `live` frame, and the merchant's alert rules are checked.

A rule (`settings.alerts` of the merchant) names a metric of the picture, a comparison and a
value — longest wait > 60 s, CSAT of the last hour < 4, a VIP customer waiting — optionally for
one group. A rule that starts to hold raises an alert: an `alert` frame to the supervisors and
an `alert.raised` event; when it stops holding, `alert.resolved`. Which rules fire is kept in
Redis (`{p}m:{m}:alerts`), so with several gateways each change is one event, not one per
gateway.
"""
from __future__ import annotations

import asyncio
import logging
import operator
import time
from typing import Any

import orjson

from storage import outbox
from storage.events import Event

from .live import recent, snapshot

log = logging.getLogger(__name__)
PERIOD_S = 2.0
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
# metric -> where its value is: totals of the picture, a group's queue, or ClickHouse's recent numbers
TOTALS = ("waiting", "longest_wait_s", "vip_waiting", "angry_waiting", "agents_online")
GROUP = ("waiting", "longest_wait_s", "vip_waiting")
RECENT = ("response_p50_5m_s", "response_p90_5m_s", "response_p50_15m_s", "response_p90_15m_s",
          "incoming_per_min", "abandoned_15m", "csat_1h")
METRICS = tuple(dict.fromkeys(TOTALS + RECENT))


def value_of(rule: dict, picture: dict) -> float | None:
    """The rule's metric in the picture (None: unknown now, e.g. no ratings in the last hour)."""
    metric, group = rule["metric"], rule.get("group")
    if group:
        queue = next((q for q in picture["queues"] if q["group_id"] == group), None)
        return None if queue is None or metric not in GROUP else queue[metric]
    if metric in TOTALS:
        return picture["totals"][metric]
    return (picture.get("recent") or {}).get(metric)


def firing(rules: list[dict], picture: dict) -> dict[str, float]:
    """name -> value of every rule that holds now."""
    out = {}
    for rule in rules:
        value = value_of(rule, picture)
        if value is not None and OPS[rule.get("op", ">")](value, rule["value"]):
            out[rule["name"]] = value
    return out


class Monitor:
    def __init__(self, services):
        self.svc = services
        self.task: asyncio.Task | None = None
        self.stats = {"ticks": 0, "pushed": 0, "raised": 0, "resolved": 0, "errors": 0}

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                await self.tick()
            except Exception:  # the loop must live: a failing tick is retried next period
                self.stats["errors"] += 1
                log.exception("monitor: tick failed")
            await asyncio.sleep(max(0.1, PERIOD_S - (time.monotonic() - t0)))

    def _watchers(self) -> dict[str, list]:
        by_merchant: dict[str, list] = {}
        for conn in list(self.svc.hub.connections.values()):
            if getattr(conn, "monitoring", False) and not conn.closing:
                by_merchant.setdefault(conn.principal.merchant, []).append(conn)
        return by_merchant

    async def tick(self) -> None:
        watchers = self._watchers()
        self.stats["ticks"] += 1
        if not watchers:
            return
        numbers = await recent(self.svc.query, sorted(watchers))
        for merchant, conns in watchers.items():
            picture = await snapshot(self.svc.records, merchant, numbers[merchant])
            rules = ((await self.svc.records.get_merchant(merchant)).get("settings") or {}).get("alerts") or []
            changes = await self._alerts(merchant, rules, picture)
            picture["alerts"] = changes["firing"]
            frame = {"t": "live", **picture}
            for conn in conns:
                conn.offer(frame)
                for alert in changes["new"]:
                    conn.offer({"t": "alert", **alert})
            self.stats["pushed"] += len(conns)

    async def _alerts(self, merchant: str, rules: list[dict], picture: dict) -> dict[str, Any]:
        """Compare what holds now with what Redis says fires; the gateway that records a change
        writes its event (HSETNX / HDEL decide, so a change is recorded once)."""
        r, p = self.svc.records.r, self.svc.records.p
        key = f"{p}m:{merchant}:alerts"
        now_firing = firing(rules, picture)
        known = {k.decode(): orjson.loads(v) for k, v in (await r.hgetall(key)).items()}
        rules_by_name = {rule["name"]: rule for rule in rules}
        new, events = [], []
        for name, value in now_firing.items():
            if name in known:
                continue
            alert = {"rule": name, "metric": rules_by_name[name]["metric"], "value": value, "state": "raised",
                     "threshold": rules_by_name[name]["value"], "group": rules_by_name[name].get("group"),
                     "at": picture["at"]}
            if await r.hsetnx(key, name, orjson.dumps(alert)):
                new.append(alert)
                events.append(self._event(merchant, "alert.raised", alert))
                self.stats["raised"] += 1
        for name in set(known) - set(now_firing):
            if await r.hdel(key, name):
                resolved = {**known[name], "state": "resolved", "at": picture["at"]}
                new.append(resolved)
                events.append(self._event(merchant, "alert.resolved", resolved))
                self.stats["resolved"] += 1
        if events:
            async with r.pipeline(transaction=True) as pipe:
                outbox.append(pipe, p, self.svc.records.shard, events)
                await pipe.execute()
        current = {k.decode(): orjson.loads(v) for k, v in (await r.hgetall(key)).items()} if new else known
        return {"firing": sorted(current.values(), key=lambda a: a["at"]), "new": new}

    @staticmethod
    def _event(merchant: str, type_: str, alert: dict) -> Event:
        return Event(merchant_id=merchant, type=type_, actor_key="monitor", seq=0, ts=alert["at"],
                     group_id=alert.get("group") or "", payload=alert)
