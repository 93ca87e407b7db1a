"""Reports over REST (`/api/v1/reports`), and raw events for a merchant's own BI
(`/api/v1/events/export`). Supervisors and up, and the merchant's systems by API key; always
the caller's own merchant. Any report as JSON or CSV (`?format=csv`)."""
from __future__ import annotations

import asyncio
import csv
import io
import time

import orjson

from quart import Blueprint, Response, request

from storage import crypto, outbox
from storage.events import Event
from storage.reports import REPORTS, STAFFING_OPTIONS, Params, ReportError, run

from .auth import Principal
from .context import actor_of, authorized, services
from .errors import ApiError
from .permissions import Action

reports_api = Blueprint("reports", __name__, url_prefix="/api/v1")
EXPORT_FORMATS = {"parquet": ("Parquet", "application/vnd.apache.parquet"),
                  "csv": ("CSVWithNames", "text/csv; charset=utf-8"),
                  "jsonl": ("JSONEachRow", "application/x-ndjson")}
EXPORT_MAX_DAYS = 31     # a month of raw events per request: a year of a large merchant is ~20 M rows
EXPORT_COLUMNS = ("event_id, type, session_id, ts, channel, agent_id, customer_id, group_id, actor_key, seq, payload")


def _params(who: Principal) -> Params:
    a = request.args
    try:
        return Params.parse(who.merchant, a.get("from"), a.get("to"), a.get("tz"), a.get("by"),
                            options={k: a.get(k) for k in STAFFING_OPTIONS})
    except ReportError as exc:
        raise ApiError(422, "invalid_field", str(exc), str(exc).split(":", 1)[0]) from None


def _query():
    query = services().query
    if query is None:
        raise ApiError(503, "unavailable", "no ClickHouse writer is reachable from this gateway")
    return query


@reports_api.get("/reports")
@authorized(Action.REPORT_READ)
async def list_reports(who: Principal):
    return {"items": [{"name": name, "description": (fn.__doc__ or "").strip().split("\n\n")[0]}
                      for name, fn in REPORTS.items()]}


@reports_api.get("/reports/<name>")
@authorized(Action.REPORT_READ)
async def one_report(name: str, who: Principal):
    """?from=2026-11-11&to=2026-11-12&tz=Asia/Shanghai&by=hour|day|week&format=json|csv"""
    if name not in REPORTS:
        raise ApiError(404, "not_found", f"no report {name!r}; known: {', '.join(REPORTS)}")
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(422, "invalid_field", f"format: must be json or csv, got {fmt!r}", "format")
    out = await run(_query(), name, _params(who))
    out["rows"] = _opened_rows(who.merchant, out["rows"])    # e.g. csat comments, sealed in ClickHouse
    if fmt == "json":
        return out
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(out["columns"])
    writer.writerows(out["rows"])
    return Response(text.getvalue().encode("utf-8-sig"), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


@reports_api.get("/events/export")
@authorized(Action.EVENTS_EXPORT)
async def export_events(who: Principal):
    """The merchant's raw events in a time range (at most 31 days a request), as Parquet
    (default), CSV or JSON lines, for its own BI tools. Every export is itself an event."""
    p = _params(who)
    fmt = request.args.get("format", "parquet")
    if fmt not in EXPORT_FORMATS:
        raise ApiError(422, "invalid_field", f"format: must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}", "format")
    if (p.end - p.start).days > EXPORT_MAX_DAYS:
        raise ApiError(422, "invalid_field", f"to: at most {EXPORT_MAX_DAYS} days of raw events per export", "to")
    export = services().export
    if export is None:
        raise ApiError(503, "unavailable", "no ClickHouse writer is reachable from this gateway")
    clickhouse_format, content_type = EXPORT_FORMATS[fmt]
    body = await export(f"SELECT {EXPORT_COLUMNS} FROM events WHERE merchant_id = {{m:String}}"
                        " AND ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({hi:Int64}, 'UTC')"
                        " ORDER BY ts, event_id", p.sql_parameters(), clickhouse_format)
    body = await asyncio.to_thread(_opened_export, _ring(), who.merchant, body, fmt)
    await _audit_export(who, p, fmt, len(body))
    return Response(body, content_type=content_type,
                    headers={"Content-Disposition": f'attachment; filename="events-{who.merchant}.{fmt}"'})


def _ring() -> crypto.Keyring:
    return crypto.keyring(services().records.r, services().records.p)


def _opened_rows(merchant: str, rows: list[list]) -> list[list]:
    ring = _ring()
    return [[ring.open_value(merchant, v) if isinstance(v, str) and v.startswith(crypto.FIELD_PREFIX) else v
             for v in row] for row in rows]


def _opened_export(ring: crypto.Keyring, merchant: str, body: bytes, fmt: str) -> bytes:
    """The export as ClickHouse formatted it, its payloads opened (the merchant reads its own data in clear)."""
    def opened(payload: str | bytes) -> str:
        return orjson.dumps(ring.open_payload(merchant, orjson.loads(payload or b"{}"))).decode()

    if fmt == "jsonl":
        lines = []
        for line in body.splitlines():
            row = orjson.loads(line)
            lines.append(orjson.dumps({**row, "payload": opened(row["payload"])}))
        return b"".join(line + b"\n" for line in lines)
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
        at = rows[0].index("payload") if rows else -1
        out = io.StringIO(newline="")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerows([rows[0]] + [[*r[:at], opened(r[at]), *r[at + 1:]] for r in rows[1:]] if rows else [])
        return out.getvalue().encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(body))
    at = table.schema.get_field_index("payload")
    kind = table.schema.field(at).type
    values = [opened(v) for v in table.column(at).to_pylist()]
    table = table.set_column(at, table.schema.field(at), pa.array([v.encode() for v in values] if pa.types.is_binary(kind)
                                                                  else values, kind))
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


async def _audit_export(who: Principal, p: Params, fmt: str, size: int) -> None:
    records = services().records
    event = Event(merchant_id=who.merchant, type="audit.events.exported", actor_key="admin", seq=0,
                  ts=int(time.time() * 1000), payload={"actor": actor_of(who), "from": p.start.isoformat(),
                                                       "to": p.end.isoformat(), "format": fmt, "bytes": size})
    async with records.r.pipeline(transaction=True) as pipe:
        outbox.append(pipe, records.p, records.shard, [event])
        await pipe.execute()
