"""Every report at a year of a large merchant's events: loads synthetic conversations into
embedded chDB (the production schema and migrations), then times each report. Prints a table;
asserts nothing about time.

    python -m bench.reports [--sessions 2000000] [--repeat 3] [--data DIR]

Each conversation is 10 events (created, queued or handed over by the bot, assigned or
abandoned, 5 messages with response times, closed, rated), so 2,000,000 conversations are 20,000,000 events: 80 % of them
one big merchant's, the rest spread over 7 others, over the year before Double 11 with daily
rhythm and a 20-fold Double-11 day. Generated inside ClickHouse (INSERT ... SELECT from
numbers()), so loading takes about a minute, not hours. --data keeps the chDB directory to
re-run the timings without reloading.
"""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from storage.events_clickhouse import ClickHouseSink
from storage.reports import REPORTS, Params, run

MERCHANT = "bigshop"
YEAR_START = "2025-11-12 00:00:00"   # a year ending with Double 11 2026
DOUBLE_11 = "2026-11-10 16:00:00"     # 2026-11-11 00:00 in Asia/Shanghai

# One row per (conversation n, event k). Pseudo-random but deterministic: cityHash64(n, salt).
GENERATE = f"""
INSERT INTO events (event_id, merchant_id, type, actor_key, seq, session_id, ts, channel, agent_id, customer_id,
                    group_id, payload)
SELECT generateUUIDv4(n * 10 + k), merchant, type, concat('session:', merchant, ':', sid), k + 1, sid,
       start + toIntervalMillisecond(offset_ms), channel, if(k >= 2 AND NOT abandoned, agent, ''),
       concat('c', toString(cityHash64(n, 2) % 300000)), grp, payload
FROM (
    SELECT n, k, sid, merchant, start, channel, agent, grp, abandoned, wait_ms, r1, r2, handle_ms, bot,
           multiIf(k = 0, 'session.created', k = 1, if(bot, 'bot.handoff', 'queue.entered'),
                   k = 2, if(abandoned, 'session.closed', 'session.assigned'),
                   abandoned, 'message.read',
                   k IN (3, 5, 7), 'message.sent', k IN (4, 6), 'message.sent',
                   k = 8, 'session.closed', 'csat.rated') AS type,
           multiIf(k = 0, 0, k = 1, 1000, k = 2, 1000 + wait_ms, abandoned, 2000 + wait_ms + k,
                   k = 3, 1000 + wait_ms + 2000, k = 4, 1000 + wait_ms + 2000 + r1,
                   k = 5, 1000 + wait_ms + 60000, k = 6, 1000 + wait_ms + 60000 + r2,
                   k = 7, 1000 + wait_ms + 120000, k = 8, 1000 + wait_ms + handle_ms,
                   1000 + wait_ms + handle_ms + 30000) AS offset_ms,
           multiIf(k = 0, concat('{{"priority":0,"issue_type":"', ['shipping', 'refund', 'presale', 'invoice', 'other'][
                                 1 + cityHash64(n, 3) % 5], '","bot":', if(bot, 'true', 'false'), '}}'),
                   k = 1 AND bot, concat('{{"reason":"', ['no_match', 'asked_for_human', 'angry', 'repeated'][
                                               1 + cityHash64(n, 19) % 4], '","priority":0}}'),
                   k = 2 AND abandoned, concat('{{"by":"customer","from_status":"queued","handle_s":0,"wait_ms":',
                                               toString(wait_ms), '}}'),
                   k = 2, concat('{{"wait_ms":', toString(wait_ms), '}}'),
                   abandoned, '{{}}',
                   k IN (3, 5, 7), '{{"kind":"text","content":{{"text":"在吗 where is my parcel"}},"from":{{"kind":"visitor"}}}}',
                   k = 4, concat('{{"kind":"text","content":{{"text":"您好"}},"from":{{"kind":"agent"}},"response_ms":',
                                 toString(r1), ',"first_response":true}}'),
                   k = 6, concat('{{"kind":"text","content":{{"text":"已发货"}},"from":{{"kind":"agent"}},"response_ms":',
                                 toString(r2), '}}'),
                   k = 8, concat('{{"by":"agent","from_status":"assigned","handle_s":', toString(handle_ms / 1000), '}}'),
                   concat('{{"score":', toString(1 + cityHash64(n, 5) % 5), ',"comment":"',
                          if(cityHash64(n, 6) % 20 = 0, '物流太慢 slow', ''), '"}}')) AS payload
    FROM (
        SELECT number AS n, arrayJoin(range(10)) AS k, concat('s', toString(number)) AS sid,
               if(number % 10 < 8, '{MERCHANT}', concat('shop', toString(number % 7))) AS merchant,
               if(cityHash64(number, 1) % 100 < 20,
                  toDateTime64('{DOUBLE_11}', 3, 'UTC') + toIntervalSecond(cityHash64(number, 7) % 86400),
                  toDateTime64('{YEAR_START}', 3, 'UTC') + toIntervalDay(cityHash64(number, 8) % 364)
                      + toIntervalSecond(3600 * (1 + cityHash64(number, 9) % 15) + cityHash64(number, 10) % 3600))
                  AS start,
               ['web', 'wechat', 'whatsapp'][1 + cityHash64(number, 11) % 3] AS channel,
               concat('a', toString(cityHash64(number, 12) % 120)) AS agent,
               concat('g', toString(cityHash64(number, 13) % 5)) AS grp,
               cityHash64(number, 14) % 10 = 0 AS abandoned,
               cityHash64(number, 4) % 2 = 0 AS bot,
               toUInt32(cityHash64(number, 15) % 180000) AS wait_ms,
               toUInt32(5000 + cityHash64(number, 16) % 60000) AS r1,
               toUInt32(3000 + cityHash64(number, 17) % 40000) AS r2,
               toUInt32(200000 + cityHash64(number, 18) % 600000) AS handle_ms
        FROM numbers({{sessions:UInt64}})
    )
)
"""


def load(sink: ClickHouseSink, sessions: int, batch: int = 250_000) -> float:
    t0 = time.perf_counter()
    for first in range(0, sessions, batch):
        n = min(batch, sessions - first)
        sql = GENERATE.replace("FROM numbers({sessions:UInt64})", f"FROM numbers({first}, {n})")
        sink.client.command(sql)
        print(f"\r  loaded {first + n:,} conversations", end="", flush=True)
    print()
    return time.perf_counter() - t0


async def time_reports(sink: ClickHouseSink, ranges: list[tuple[str, Params]], repeat: int) -> list[tuple]:
    async def query(sql, parameters):
        return sink.query(sql, parameters)

    out = []
    for label, params in ranges:
        for name in REPORTS:
            times, rows = [], 0
            for _ in range(repeat):
                t0 = time.perf_counter()
                result = await run(query, name, params)
                times.append(time.perf_counter() - t0)
                rows = len(result["rows"])
            out.append((label, name, rows, min(times), max(times)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=None, help="keep chDB here (re-runs skip loading if it has events)")
    a = ap.parse_args()
    data = a.data or Path(tempfile.mkdtemp(prefix="pd-bench-reports-"))
    sink = ClickHouseSink(f"chdb://{data.resolve()}", database="peakdesk")
    have = sink.query("SELECT count() FROM events")[0][0]
    if have == 0:
        print(f"loading {a.sessions:,} conversations ({a.sessions * 10:,} events) into {data}")
        seconds = load(sink, a.sessions)
        have = sink.query("SELECT count() FROM events")[0][0]
        print(f"  {have:,} events in {seconds:.0f} s ({have / seconds:,.0f} rows/s)")
    size = sink.query("SELECT formatReadableSize(sum(bytes_on_disk)) FROM system.parts "
                      "WHERE database = 'peakdesk' AND table = 'events' AND active")[0][0]
    mine = sink.query(f"SELECT count() FROM events WHERE merchant_id = '{MERCHANT}'")[0][0]
    print(f"{have:,} events on disk ({size}); {mine:,} of them {MERCHANT}'s")
    ranges = [("year by day", Params.parse(MERCHANT, "2025-11-12", "2026-11-12", "Asia/Shanghai", "day")),
              ("year by week", Params.parse(MERCHANT, "2025-11-12", "2026-11-12", "Asia/Shanghai", "week")),
              ("Double 11 by hour", Params.parse(MERCHANT, "2026-11-11", "2026-11-12", "Asia/Shanghai", "hour"))]
    results = asyncio.run(time_reports(sink, ranges, a.repeat))
    print(f"\n{'range':<20}{'report':<22}{'rows':>7}{'best s':>9}{'worst s':>9}")
    for label, name, rows, best, worst in results:
        flag = "" if worst <= 1.0 else "   > 1 s"
        print(f"{label:<20}{name:<22}{rows:>7}{best:>9.3f}{worst:>9.3f}{flag}")
    print(f"\nslowest: {max(r[4] for r in results):.3f} s")


if __name__ == "__main__":
    main()
