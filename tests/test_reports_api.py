"""Reports and raw-event export over REST against a running peakdesk (gateway, hosts, writer
on Ray, Redis, chDB): a real conversation shows up in the reports, as JSON and CSV; raw events
come out as Parquet a BI tool reads; roles and bad parameters are refused by name."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio

from gateway.client import connect
from tests.gateway_cluster import Peakdesk
from tests.test_routing_ws import agent, group, online

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def pd(ray_session, redis_server, tmp_path_factory):
    p = Peakdesk(redis_server.url, tmp_path_factory.mktemp("reports"), "pd-test-reports", "rp:")
    yield p
    p.stop()


def get(pd: Peakdesk, path: str, token: str) -> tuple[int, str, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{pd.port}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture(scope="module")
def conversation(pd):
    g = group(pd)
    agent_id, token = agent(pd, [g])

    async def main():
        async with connect(pd.url, token) as a, connect(pd.url, pd.visitor_token()) as c:
            await online(a)
            session = await c.open(group=g)
            await a.until("assigned", session=session)
            await a.subscribe(session)
            await c.send_message(session, "text", {"text": "我的快递到哪了"})
            await a.next_message(session)
            await a.send_message(session, "text", {"text": "已经发货了 shipped"})
            await a.close(session)
            await c.until("event", event="csat.invite")
            await c.rate(session, 4, "还行 ok")
            await c.until("event", event="csat.rated")
            return session
    session = trio.run(main)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the writer lingers before it inserts
        counts = pd.post("/api/v1/events/count", {"sessions": [session]}, pd.owner_token)["counts"]
        if counts.get("csat.rated"):
            break
        time.sleep(0.3)
    return session, agent_id, g


def today_range() -> str:
    now = dt.datetime.now(dt.timezone.utc)
    return f"from={(now - dt.timedelta(days=1)).date()}&to={(now + dt.timedelta(days=2)).date()}&tz=Asia/Shanghai"


def test_a_conversation_shows_up_in_the_reports(pd, conversation):
    session, agent_id, g = conversation
    names = {r["name"] for r in pd.request("GET", "/api/v1/reports", None, pd.owner_token)["items"]}
    assert {"volume", "response_times", "agents", "csat", "staffing", "abandonment_by_wait"} <= names
    volume = pd.request("GET", f"/api/v1/reports/volume?{today_range()}", None, pd.owner_token)
    totals = dict(zip(volume["columns"][1:], map(sum, zip(*[r[1:] for r in volume["rows"]]))))
    assert totals["conversations"] >= 1 and totals["assigned"] >= 1 and totals["closed"] >= 1
    agents = pd.request("GET", f"/api/v1/reports/agents?{today_range()}", None, pd.owner_token)
    mine = dict(zip(agents["columns"], next(r for r in agents["rows"] if r[0] == agent_id)))
    assert (mine["conversations"], mine["messages"], mine["ratings"], mine["csat_avg"]) == (1, 1, 1, 4.0)
    assert mine["first_response_avg_s"] is not None and mine["online_s"] > 0
    groups = pd.request("GET", f"/api/v1/reports/groups?{today_range()}", None, pd.owner_token)
    assert [r[1:3] for r in groups["rows"] if r[0] == g] == [[1, 1]]  # queued, served


def test_any_report_as_csv_and_raw_events_as_parquet(pd, conversation):
    import pyarrow.parquet as pq

    session, _, _ = conversation
    status, ctype, body = get(pd, f"/api/v1/reports/csat?{today_range()}&format=csv", pd.owner_token)
    assert status == 200 and ctype.startswith("text/csv")
    lines = body.decode("utf-8-sig").splitlines()
    assert lines[0] == "score,count,share" and "4,1,1.0" in lines
    status, ctype, body = get(pd, f"/api/v1/events/export?{today_range()}", pd.owner_token)
    assert status == 200 and ctype == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(body)).to_pylist()
    ours = [r for r in table if r["session_id"] == session]
    assert {"session.created", "message.sent", "session.closed", "csat.rated"} <= {r["type"] for r in ours}
    assert json.loads(next(r for r in ours if r["type"] == "csat.rated")["payload"])["comment"] == "还行 ok"
    status, ctype, body = get(pd, f"/api/v1/events/export?{today_range()}&format=jsonl", pd.owner_token)
    assert status == 200 and all(json.loads(line)["event_id"] for line in body.splitlines())


def test_reports_are_for_supervisors_and_bad_parameters_are_named(pd, conversation):
    _, token = agent(pd, [])
    status, _, body = get(pd, "/api/v1/reports/volume", token)
    assert status == 403 and json.loads(body)["error"] == "forbidden"
    for query, named in (("tz=Mars/Base", "tz"), ("by=minute", "by"), ("from=2026-13-01", "from"),
                         ("format=xlsx", "format"), ("growth=lots", "growth")):
        status, _, body = get(pd, f"/api/v1/reports/staffing?{query}", pd.owner_token)
        assert status == 422 and json.loads(body)["message"].startswith(named), (query, body)
    status, _, body = get(pd, "/api/v1/reports/nps", pd.owner_token)
    assert status == 404
    status, _, body = get(pd, "/api/v1/events/export?from=2026-01-01&to=2026-03-01", pd.owner_token)
    assert status == 422 and "31 days" in json.loads(body)["message"]


def peakdesk_report(pd: Peakdesk, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "report", "--url", f"http://127.0.0.1:{pd.port}", *args],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120)


def test_peakdesk_report_prints_tables_csv_and_names_errors(pd, conversation, tmp_path):
    _, agent_id, _ = conversation
    key = pd.post("/api/v1/api-keys", {"name": "ops terminal"}, pd.owner_token)["api_key"]
    rng = dict(p.split("=") for p in today_range().split("&"))
    done = peakdesk_report(pd, "agents", "--api-key", key, "--from", rng["from"], "--to", rng["to"], "--tz", rng["tz"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("agents · demo") and lines[1].split()[:3] == ["agent_id", "conversations", "messages"]
    assert any(line.split()[0] == agent_id for line in lines[3:])
    done = peakdesk_report(pd, "csat", "--api-key", key, "--from", rng["from"], "--to", rng["to"], "--format", "csv")
    assert done.returncode == 0 and list(csv.reader(io.StringIO(done.stdout)))[0] == ["score", "count", "share"]
    (tmp_path / "demo-login.txt").write_text((pd.settings.data_dir / "demo-login.txt").read_text())
    done = peakdesk_report(pd, "--data-dir", str(tmp_path))  # the demo owner's login; no name: the list
    assert done.returncode == 0 and "staffing" in done.stdout
    done = peakdesk_report(pd, "volume", "--api-key", key, "--tz", "Mars/Base")
    assert done.returncode == 1 and "422: tz: unknown time zone" in done.stderr
    done = peakdesk_report(pd, "volume", "--api-key", "pdk_not_a_key")
    assert done.returncode == 1 and "401" in done.stderr
