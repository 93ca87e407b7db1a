"""The live picture a supervisor watches during a peak, for one merchant: agents by status and
load (presence in Redis), each group's queue — waiting, longest wait, VIP and angry customers
(queue actors' snapshots) — and the last minutes from ClickHouse: response times over 5 and
15 minutes, the incoming rate, abandonment, CSAT of the last hour.

`snapshot()` serves `GET /api/v1/live` and the `live` frames the monitor pushes every 2 s.
`recent()` asks ClickHouse once for many merchants (one query per monitor tick)."""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from storage.actor_store import read_states
from storage.presence import Presence
from storage.records import RecordStore
from storage.reports import plain

Query = Callable[[str, dict], Awaitable[list[tuple]]]
VIP_PRIORITY = 1    # queue priority of the first VIP tier (diversion rules give 1-9; angry handovers 8)

RECENT_SQL = """
SELECT merchant_id,
       round(quantileIf(0.5)(response_ms, responded AND ts >= now64(3) - INTERVAL 5 MINUTE) / 1000, 1),
       round(quantileIf(0.9)(response_ms, responded AND ts >= now64(3) - INTERVAL 5 MINUTE) / 1000, 1),
       round(quantileIf(0.5)(response_ms, responded AND ts >= now64(3) - INTERVAL 15 MINUTE) / 1000, 1),
       round(quantileIf(0.9)(response_ms, responded AND ts >= now64(3) - INTERVAL 15 MINUTE) / 1000, 1),
       countIf(type = 'session.created' AND ts >= now64(3) - INTERVAL 5 MINUTE) / 5,
       countIf(type = 'session.closed' AND from_status = 'queued' AND ts >= now64(3) - INTERVAL 15 MINUTE),
       round(avgIf(score, type = 'csat.rated'), 2), countIf(type = 'csat.rated')
FROM (SELECT merchant_id, type, ts, response_ms, from_status, score,
             type = 'message.sent' AND sender = 'agent' AND (response_ms > 0 OR first_response = 1) AS responded
      FROM events
      WHERE merchant_id IN {ms:Array(String)} AND ts >= now64(3) - INTERVAL 1 HOUR
        AND type IN ('message.sent', 'session.created', 'session.closed', 'csat.rated'))
GROUP BY merchant_id
"""
RECENT_KEYS = ("response_p50_5m_s", "response_p90_5m_s", "response_p50_15m_s", "response_p90_15m_s",
               "incoming_per_min", "abandoned_15m", "csat_1h", "ratings_1h")


async def recent(query: Query | None, merchants: list[str]) -> dict[str, dict]:
    """merchant -> the ClickHouse numbers; empty values when ClickHouse can't answer."""
    empty = dict.fromkeys(RECENT_KEYS)
    if query is None or not merchants:
        return {m: dict(empty) for m in merchants}
    try:
        rows = await query(RECENT_SQL, {"ms": merchants})
    except Exception:  # ClickHouse away: the Redis half of the picture still goes out
        return {m: dict(empty) for m in merchants}
    out = {m: {**empty, "incoming_per_min": 0.0, "abandoned_15m": 0, "ratings_1h": 0} for m in merchants}
    for row in rows:
        out[row[0]] = {k: plain(v) for k, v in zip(RECENT_KEYS, row[1:])}
    return out


async def snapshot(records: RecordStore, merchant: str, recent_numbers: dict | None = None) -> dict[str, Any]:
    presence = Presence(records.r, records.p)
    online = {a["agent_id"]: a for a in await presence.agents(merchant)}
    agents = [{"agent_id": a["agent_id"], "name": a["name"], "groups": a.get("groups", []),
               **{k: online.get(a["agent_id"], {}).get(k) for k in ("status", "capacity", "load")}}
              for a in await records.list_agents(merchant)]
    held = await read_states(records.r, records.p, "agent", merchant, [a["agent_id"] for a in agents])
    by_status: dict[str, int] = {}
    for a, state in zip(agents, held):
        a["status"] = a["status"] or "offline"
        a["sessions"] = (state or {}).get("sessions", [])  # what each one holds now
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
    groups = await records.list_groups(merchant)
    states = await read_states(records.r, records.p, "queue", merchant, [g["group_id"] for g in groups])
    now, queues = time.time(), []
    for g, state in zip(groups, states):
        waiting = (state or {}).get("waiting", [])
        flagged = [{"session_id": w["session"], "customer_id": w["customer"], "flag": w["flag"],
                    "priority": w["priority"], "waiting_s": round(now - w["since"], 1)}
                   for w in waiting if w.get("flag")]  # e.g. the bot handed over an angry customer
        queues.append({"group_id": g["group_id"], "name": g["name"], "waiting": len(waiting),
                       "longest_wait_s": round(max((now - w["since"] for w in waiting), default=0.0), 1),
                       "vip_waiting": sum(1 for w in waiting if w["priority"] >= VIP_PRIORITY and not w.get("flag")),
                       "flagged": flagged})
    totals = {"agents": by_status, "waiting": sum(q["waiting"] for q in queues),
              "longest_wait_s": max((q["longest_wait_s"] for q in queues), default=0.0),
              "vip_waiting": sum(q["vip_waiting"] for q in queues),
              "angry_waiting": sum(1 for q in queues for f in q["flagged"] if f["flag"] == "angry"),
              "agents_online": by_status.get("online", 0) + by_status.get("busy", 0)}
    return {"at": int(now * 1000), "agents": agents, "queues": queues, "totals": totals,
            "recent": recent_numbers if recent_numbers is not None else dict.fromkeys(RECENT_KEYS)}

