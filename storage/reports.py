"""Reports from ClickHouse's `events`: one merchant, any time range, any time zone, by hour,
day or week. Each report is a few aggregate queries over the table's sorting key (merchant,
day, type) and the narrow columns migration 0002 materialises at insert (sender, wait_ms,
response_ms, handle_ms, score, reason, ...), so a query reads a few columns of the days and
event types it needs — fast at a year of Double-11 data.

`run(query, name, params)` returns {"report", "columns", "rows", ...}; `query(sql, parameters)`
is an async function returning rows (the gateway's goes through a ClickHouse writer). Time
buckets are labelled in the merchant's time zone: "2026-11-11 00:00" (hour, day) or
"2026-11-09" (the Monday of a week).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Query = Callable[[str, dict], Awaitable[list[tuple]]]
BUCKETS = ("hour", "day", "week")
MAX_RANGE_DAYS = 400
# How long customers had waited, in seconds, for abandonment against wait.
WAIT_BANDS = (10, 30, 60, 120, 300)


class ReportError(ValueError):
    """A report request that can't be run; the message names the parameter."""


@dataclass(frozen=True)
class Params:
    merchant: str
    start: dt.datetime      # aware, inclusive
    end: dt.datetime        # aware, exclusive
    tz: str = "UTC"
    by: str = "day"
    options: dict = field(default_factory=dict, compare=False)   # a report's own knobs (staffing)

    @classmethod
    def parse(cls, merchant: str, start: str | None, end: str | None, tz: str | None, by: str | None,
              now: dt.datetime | None = None, options: dict | None = None) -> "Params":
        """`start`/`end`: ISO dates ("2026-11-11": the day's start in `tz`) or date-times
        (without an offset: in `tz`); default the last 7 days. `end` is exclusive."""
        tz = tz or "UTC"
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ReportError(f"tz: unknown time zone {tz!r} (an IANA name like Asia/Shanghai)") from None
        by = by or "day"
        if by not in BUCKETS:
            raise ReportError(f"by: must be one of {', '.join(BUCKETS)}, got {by!r}")
        now = now or dt.datetime.now(dt.timezone.utc)
        end_at = _instant("to", end, zone) if end else now
        start_at = _instant("from", start, zone) if start else end_at - dt.timedelta(days=7)
        if start_at >= end_at:
            raise ReportError(f"from: must be before to ({start_at.isoformat()} >= {end_at.isoformat()})")
        if end_at - start_at > dt.timedelta(days=MAX_RANGE_DAYS):
            raise ReportError(f"to: at most {MAX_RANGE_DAYS} days from `from`")
        return cls(merchant, start_at, end_at, tz, by, _staffing_options(options or {}))

    def sql_parameters(self) -> dict[str, Any]:
        return {"m": self.merchant, "tz": self.tz, "lo": int(self.start.timestamp() * 1000),
                "hi": int(self.end.timestamp() * 1000)}

    def describe(self) -> dict:
        return {"merchant": self.merchant, "from": self.start.isoformat(), "to": self.end.isoformat(), "tz": self.tz,
                "by": self.by}


def _instant(name: str, value: str, zone: ZoneInfo) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(f"{name}: not an ISO date or date-time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


# -- SQL pieces -------------------------------------------------------------------------------
RANGE = ("merchant_id = {m:String} AND ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC')"
         " AND ts < fromUnixTimestamp64Milli({hi:Int64}, 'UTC')")


def _key(by: str, column: str = "ts") -> str:
    """The time bucket of a row, in the merchant's time zone (grouped on before formatting:
    formatting once per bucket, not once per row, is what keeps a year's reports fast)."""
    if by == "week":
        return f"toMonday({column}, {{tz:String}})"
    return f"{'toStartOfHour' if by == 'hour' else 'toStartOfDay'}({column}, {{tz:String}})"


def _labelled(by: str, inner: str, order: str = "b") -> str:
    """`inner` groups by `b` (a _key); this labels each bucket once and orders by time."""
    label = "toString(b)" if by == "week" else "formatDateTime(b, '%Y-%m-%d %H:%i', {tz:String})"
    return f"SELECT {label} AS bucket, * EXCEPT (b) FROM ({inner}) ORDER BY {order}"


def _q(column: str, level: float, cond: str) -> str:
    """A quantile in seconds (2 decimals) of a millisecond column, over rows where `cond`."""
    return f"round(quantileIf({level})({column}, {cond}) / 1000, 2)"


def _avg(column: str, cond: str) -> str:
    return f"round(avgIf({column}, {cond}) / 1000, 2)"


# -- the reports --------------------------------------------------------------------------------
async def volume(query: Query, p: Params) -> tuple[list[str], list[list]]:
    sql = f"""
        SELECT {_key(p.by)} AS b,
               countIf(type = 'session.created') AS conversations,
               countIf(type = 'session.created' AND is_bot = 1) AS started_with_bot,
               countIf(type = 'queue.entered') AS queued,
               countIf(type = 'session.assigned') AS assigned,
               countIf(type = 'session.closed') AS closed,
               countIf(type = 'session.closed' AND from_status = 'queued') AS abandoned
        FROM events WHERE {RANGE} AND type IN ('session.created', 'queue.entered', 'session.assigned', 'session.closed')
        GROUP BY b"""
    return _table(await query(_labelled(p.by, sql), p.sql_parameters()),
                  ["bucket", "conversations", "started_with_bot", "queued", "assigned", "closed", "abandoned"])


async def response_times(query: Query, p: Params) -> tuple[list[str], list[list]]:
    """First response: a conversation's first agent answer after the customer started waiting
    for people; response: every agent answer to waiting customer messages. Seconds."""
    first, every = "first_response = 1", "response_ms > 0 OR first_response = 1"
    sql = f"""
        SELECT {_key(p.by)} AS b,
               countIf({first}) AS first_responses, {_avg('response_ms', first)}, {_q('response_ms', 0.5, first)},
               {_q('response_ms', 0.9, first)},
               countIf({every}) AS responses, {_avg('response_ms', every)}, {_q('response_ms', 0.5, every)},
               {_q('response_ms', 0.9, every)}
        FROM events WHERE {RANGE} AND type = 'message.sent' AND sender = 'agent'
        GROUP BY b"""
    return _table(await query(_labelled(p.by, sql), p.sql_parameters()),
                  ["bucket", "first_responses", "first_response_avg_s", "first_response_p50_s", "first_response_p90_s",
                   "responses", "response_avg_s", "response_p50_s", "response_p90_s"])


async def handle_time(query: Query, p: Params) -> tuple[list[str], list[list]]:
    cond = "from_status = 'assigned'"
    sql = f"""
        SELECT {_key(p.by)} AS b, countIf({cond}) AS handled, {_avg('handle_ms', cond)},
               {_q('handle_ms', 0.5, cond)}, {_q('handle_ms', 0.9, cond)}
        FROM events WHERE {RANGE} AND type = 'session.closed'
        GROUP BY b"""
    return _table(await query(_labelled(p.by, sql), p.sql_parameters()),
                  ["bucket", "handled", "handle_avg_s", "handle_p50_s", "handle_p90_s"])


async def waiting(query: Query, p: Params) -> tuple[list[str], list[list]]:
    """Waits of customers who got an agent, and customers who left the queue before one."""
    got, left = "type = 'session.assigned'", "type = 'session.closed' AND from_status = 'queued'"
    sql = f"""
        SELECT {_key(p.by)} AS b, countIf({got}) AS served, {_avg('wait_ms', got)},
               {_q('wait_ms', 0.5, got)}, {_q('wait_ms', 0.9, got)},
               countIf({left}) AS abandoned, {_avg('wait_ms', left)},
               round(countIf({left}) / greatest(countIf({got}) + countIf({left}), 1), 4) AS abandonment_rate
        FROM events WHERE {RANGE} AND type IN ('session.assigned', 'session.closed')
        GROUP BY b"""
    return _table(await query(_labelled(p.by, sql), p.sql_parameters()),
                  ["bucket", "served", "wait_avg_s", "wait_p50_s", "wait_p90_s", "abandoned", "abandoned_wait_avg_s",
                   "abandonment_rate"])


async def abandonment_by_wait(query: Query, p: Params) -> tuple[list[str], list[list]]:
    """Does slow service raise the bounce rate: customers by how long they had waited, and the
    share of them who left before an agent came."""
    bands = ", ".join(f"wait_ms < {s * 1000}, {i}" for i, s in enumerate(WAIT_BANDS, start=1))
    sql = f"""
        SELECT multiIf({bands}, {len(WAIT_BANDS) + 1}) AS band_no,
               countIf(type = 'session.assigned') AS served,
               countIf(type = 'session.closed') AS abandoned
        FROM events WHERE {RANGE}
          AND (type = 'session.assigned' OR (type = 'session.closed' AND from_status = 'queued'))
        GROUP BY band_no ORDER BY band_no"""
    counts = {int(b): (int(s), int(a)) for b, s, a in await query(sql, p.sql_parameters())}
    labels = [f"{lo}-{hi}s" for lo, hi in zip((0,) + WAIT_BANDS, WAIT_BANDS)] + [f"{WAIT_BANDS[-1]}s+"]
    rows = []
    for i, label in enumerate(labels, start=1):
        served, abandoned = counts.get(i, (0, 0))
        total = served + abandoned
        rows.append([label, total, served, abandoned, round(abandoned / total, 4) if total else 0.0])
    return ["waited", "customers", "served", "abandoned", "abandonment_rate"], rows


async def agents(query: Query, p: Params) -> tuple[list[str], list[list]]:
    """Per agent: conversations taken, messages sent, first response and handle time, CSAT, and
    time logged in (online, busy or away; from agent.status events within the range)."""
    params = p.sql_parameters()
    work = await query(f"""
        SELECT agent_id,
               countIf(type = 'session.assigned' OR type = 'session.transferred' OR type = 'session.taken_over') AS taken,
               countIf(type = 'message.sent' AND sender = 'agent') AS messages,
               {_avg('response_ms', "type = 'message.sent' AND first_response = 1")} AS frt,
               countIf(type = 'session.closed' AND from_status = 'assigned') AS closed,
               {_avg('handle_ms', "type = 'session.closed' AND from_status = 'assigned'")} AS handle,
               countIf(type = 'csat.rated') AS ratings,
               round(avgIf(score, type = 'csat.rated'), 2) AS csat
        FROM events WHERE {RANGE} AND agent_id != ''
          AND type IN ('session.assigned', 'session.transferred', 'session.taken_over', 'message.sent', 'session.closed',
                       'csat.rated')
        GROUP BY agent_id""", params)
    online = dict(await query(f"""
        SELECT agent_id, round(sum(if(status != 'offline', dateDiff('millisecond', ts, next_ts), 0)) / 1000) AS online_s
        FROM (SELECT agent_id, ts, JSONExtractString(payload, 'status') AS status,
                     leadInFrame(ts, 1, fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC'))
                         OVER (PARTITION BY agent_id ORDER BY ts ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_ts
              FROM events WHERE {RANGE} AND type = 'agent.status')
        GROUP BY agent_id""", params))
    rows = {r[0]: [r[0], *r[1:], float(online.get(r[0], 0))] for r in work}
    for agent, secs in online.items():
        rows.setdefault(agent, [agent, 0, 0, float("nan"), 0, float("nan"), 0, float("nan"), float(secs)])
    return _table(sorted(rows.values(), key=lambda r: (-r[1], r[0])),
                  ["agent_id", "conversations", "messages", "first_response_avg_s", "closed", "handle_avg_s", "ratings",
                   "csat_avg", "online_s"])


async def groups(query: Query, p: Params) -> tuple[list[str], list[list]]:
    got, left = "type = 'session.assigned'", "type = 'session.closed' AND from_status = 'queued'"
    sql = f"""
        SELECT group_id, countIf(type = 'queue.entered') AS queued, countIf({got}) AS served, countIf({left}) AS abandoned,
               countIf(type = 'queue.overflowed') AS overflowed_out, {_avg('wait_ms', got)}, {_q('wait_ms', 0.9, got)}
        FROM events WHERE {RANGE} AND group_id != ''
          AND type IN ('queue.entered', 'session.assigned', 'session.closed', 'queue.overflowed')
        GROUP BY group_id ORDER BY queued DESC, group_id"""
    return _table(await query(sql, p.sql_parameters()),
                  ["group_id", "queued", "served", "abandoned", "overflowed_out", "wait_avg_s", "wait_p90_s"])


async def tickets(query: Query, p: Params) -> tuple[list[str], list[list]]:
    """Tickets per department: opened, done (moved into a done status: resolved, closed),
    escalated after a breached SLA, reminded before one; time from opening to done, hours."""
    done = "type = 'ticket.updated' AND JSONExtractBool(payload, 'done') AND JSONHas(payload, 'changes', 'status')"
    age = "JSONExtractInt(payload, 'age_ms')"
    sql = f"""
        SELECT group_id AS department, countIf(type = 'ticket.created') AS opened, countIf({done}) AS done,
               countIf(type = 'ticket.escalated') AS escalated, countIf(type = 'ticket.sla_reminder') AS reminded,
               round(avgIf({age}, {done}) / 3600000, 2), round(quantileIf(0.9)({age}, {done}) / 3600000, 2)
        FROM events WHERE {RANGE} AND type IN ('ticket.created', 'ticket.updated', 'ticket.escalated', 'ticket.sla_reminder')
        GROUP BY department ORDER BY opened DESC, department"""
    return _table(await query(sql, p.sql_parameters()),
                  ["department", "opened", "done", "escalated", "reminded", "time_to_done_avg_h", "time_to_done_p90_h"])


async def issue_types(query: Query, p: Params) -> tuple[list[str], list[list]]:
    """What customers came about: the issue type of each conversation (from the widget or a
    diversion rule) and, for the bot's, the knowledge-base entries it answered most."""
    rows = await query(f"""
        SELECT 'issue_type' AS kind, if(issue_type = '', '(none)', issue_type) AS name, count() AS n
        FROM events WHERE {RANGE} AND type = 'session.created' GROUP BY name
        UNION ALL
        SELECT 'kb_entry', JSONExtractString(payload, 'entry_id') AS name, count() AS n
        FROM events WHERE {RANGE} AND type = 'bot.answered' GROUP BY name""", p.sql_parameters())
    totals: dict[str, int] = {}
    for kind, _, n in rows:
        totals[kind] = totals.get(kind, 0) + int(n)
    out = [[kind, name, int(n), round(int(n) / totals[kind], 4)] for kind, name, n in rows]
    return ["kind", "name", "count", "share"], sorted(out, key=lambda r: (r[0], -r[2], r[1]))


async def bot(query: Query, p: Params) -> tuple[list[str], list[list]]:
    """Bot resolution: conversations that started with the bot, those it handed over to people
    (one bot.handoff per conversation), and those it finished itself."""
    sql = f"""
        SELECT {_key(p.by)} AS b, countIf(type = 'session.created' AND is_bot = 1) AS bot_conversations,
               countIf(type = 'bot.handoff') AS handed_over
        FROM events WHERE {RANGE} AND type IN ('session.created', 'bot.handoff')
        GROUP BY b"""
    rows = []
    for bucket, started, handed in await query(_labelled(p.by, sql), p.sql_parameters()):
        if started or handed:
            resolved = max(int(started) - int(handed), 0)
            rows.append([bucket, int(started), resolved, int(handed), round(resolved / started, 4) if started else None])
    return ["bucket", "bot_conversations", "resolved", "handed_over", "resolution_rate"], rows


async def bot_handoffs(query: Query, p: Params) -> tuple[list[str], list[list]]:
    rows = await query(f"""SELECT reason, count() AS n FROM events WHERE {RANGE} AND type = 'bot.handoff'
                           GROUP BY reason ORDER BY n DESC, reason""", p.sql_parameters())
    total = sum(int(n) for _, n in rows) or 1
    return ["reason", "count", "share"], [[r, int(n), round(int(n) / total, 4)] for r, n in rows]


async def csat(query: Query, p: Params) -> tuple[list[str], list[list]]:
    rows = dict(await query(f"""SELECT score, count() FROM events WHERE {RANGE} AND type = 'csat.rated'
                                GROUP BY score""", p.sql_parameters()))
    total = sum(int(n) for n in rows.values())
    return ["score", "count", "share"], [[s, int(rows.get(s, 0)), round(int(rows.get(s, 0)) / total, 4) if total else 0.0]
                                         for s in (5, 4, 3, 2, 1)]


async def csat_comments(query: Query, p: Params) -> tuple[list[str], list[list]]:
    rows = await query(f"""
        SELECT formatDateTime(ts, '%Y-%m-%d %H:%i', {{tz:String}}), session_id, agent_id, score,
               JSONExtractString(payload, 'comment') AS comment
        FROM events WHERE {RANGE} AND type = 'csat.rated' AND comment != ''
        ORDER BY ts DESC LIMIT 500""", p.sql_parameters())
    return ["at", "session_id", "agent_id", "score", "comment"], [list(r) for r in rows]


async def channels(query: Query, p: Params) -> tuple[list[str], list[list]]:
    sql = f"""
        SELECT {_key(p.by)} AS b, channel, count() AS messages,
               countIf(sender IN ('customer', 'visitor')) AS from_customers, countIf(sender = 'agent') AS from_agents,
               countIf(sender = 'bot') AS from_bot
        FROM events WHERE {RANGE} AND type = 'message.sent'
        GROUP BY b, channel"""
    return _table(await query(_labelled(p.by, sql, order="b, channel"), p.sql_parameters()),
                  ["bucket", "channel", "messages", "from_customers", "from_agents", "from_bot"])


STAFFING_OPTIONS = {  # name: (default, low, high, what it is)
    "answer_within_s": (30.0, 1, 3600, "target answer time, seconds"),
    "target": (0.8, 0.01, 0.99, "share of customers answered within it"),
    "growth": (1.0, 0.01, 100, "expected arrivals / the history's (a promotion: 3 = three times)"),
    "concurrency": (3.0, 1, 20, "conversations an agent handles at once"),
    "max_occupancy": (0.85, 0.1, 1, "the busiest agents may be"),
    "shrinkage": (0.0, 0, 0.9, "share of paid time not on chats (breaks, meetings)"),
}


def _staffing_options(given: dict) -> dict:
    out = {}
    for name, (default, low, high, _) in STAFFING_OPTIONS.items():
        raw = given.get(name)
        try:
            value = default if raw is None else float(raw)
        except (TypeError, ValueError):
            raise ReportError(f"{name}: must be a number, got {raw!r}") from None
        if not (low <= value <= high) or math.isnan(value):
            raise ReportError(f"{name}: must be from {low} to {high}, got {raw!r}")
        out[name] = value
    return out


async def staffing(query: Query, p: Params) -> tuple[list[str], list[list]]:
    """Agents needed per half hour of the day for the next peak (Erlang C): new conversations
    per half hour in the range (mean per day, in the merchant's time zone) times `growth` for
    the promotion, less the bot's measured deflection (the share of conversations it closed
    without people), at the measured mean handle time. Options: answer_within_s, target,
    growth, concurrency, max_occupancy, shrinkage."""
    from storage.forecast import plan

    params = p.sql_parameters()
    (days, handle_ms, created, resolved), = await query(f"""
        SELECT greatest(dateDiff('day', fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC'),
                                 fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC')), 1),
               avgIf(handle_ms, type = 'session.closed' AND from_status = 'assigned'),
               countIf(type = 'session.created'),
               countIf(type = 'session.closed' AND from_status = 'bot')
        FROM events WHERE {RANGE} AND type IN ('session.created', 'session.closed')""", params)
    slots = dict(await query(f"""
        SELECT formatDateTime(toStartOfInterval(ts, INTERVAL 30 MINUTE, {{tz:String}}), '%H:%i', {{tz:String}}) AS slot,
               count() FROM events WHERE {RANGE} AND type = 'session.created' GROUP BY slot""", params))
    handle_s = (handle_ms or 0) / 1000 if handle_ms == handle_ms and handle_ms else 300.0
    deflection = min(resolved / created, 0.95) if created else 0.0
    labels = [f"{h:02d}:{m:02d}" for h in range(24) for m in (0, 30)]
    history = [(label, int(slots.get(label, 0)) / days) for label in labels]
    o = p.options or _staffing_options({})
    result = plan(history, 1800, handle_s=handle_s, answer_within_s=o["answer_within_s"], target=o["target"],
                  bot_deflection=deflection, growth=o["growth"], concurrency=o["concurrency"],
                  max_occupancy=o["max_occupancy"], shrinkage=o["shrinkage"])
    rows = [[s.start, round(s.arrivals, 2), s.agents, round(s.service_level, 4),
             None if math.isinf(s.asa_s) else round(s.asa_s, 1), round(s.occupancy, 3), round(handle_s, 1),
             round(deflection, 4)] for s in result]
    return ["slot", "arrivals", "agents", "service_level", "asa_s", "occupancy", "handle_s", "bot_deflection"], rows


REPORTS: dict[str, Callable[[Query, Params], Awaitable[tuple[list[str], list[list]]]]] = {
    "volume": volume, "response_times": response_times, "handle_time": handle_time, "waiting": waiting,
    "abandonment_by_wait": abandonment_by_wait, "agents": agents, "groups": groups, "issue_types": issue_types,
    "bot": bot, "bot_handoffs": bot_handoffs, "csat": csat, "csat_comments": csat_comments, "channels": channels,
    "staffing": staffing, "tickets": tickets,
}


async def run(query: Query, name: str, params: Params) -> dict:
    report = REPORTS.get(name)
    if report is None:
        raise ReportError(f"report: unknown report {name!r}; known: {', '.join(REPORTS)}")
    columns, rows = await report(query, params)
    return {"report": name, **params.describe(), "columns": columns, "rows": rows}


def _table(rows: list[tuple], columns: list[str]) -> tuple[list[str], list[list]]:
    return columns, [[plain(v) for v in r] for r in rows]


def plain(v: Any) -> Any:
    """JSON-friendly: NaN (an average over nothing) becomes None."""
    if isinstance(v, float) and v != v:
        return None
    return v
