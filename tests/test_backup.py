"""`peakdesk backup` / `peakdesk restore` (storage/backup.py, actors/backup_cli.py): Redis state
and ClickHouse events, consistent with each other, to a directory and to S3; real Redis, real
chDB, real Ray, a real S3-compatible server (SeaweedFS).

- the library, with a real writer: the writers pause between batches; events still in the
  outbox, and a batch stored but not acknowledged, come back exactly once after a restore;
- a whole cluster: conversations over websockets (messages, a closed and rated conversation, a
  ticket, messages acknowledged while the writers were paused), backed up to a directory and to
  S3, everything wiped, restored by the `peakdesk restore` command: the same events per type,
  the same conversation logs and message events, and a customer who reconnects reads the same
  messages;
- bad input: a clear error naming what is wrong, exit status 2, nothing changed.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
import ray
import redis
import trio
from click.testing import CliRunner

import cli
from storage import backup as bk
from storage import outbox
from storage.events_clickhouse import ClickHouseSink
from storage.writer import Batch, OutboxWriter, pause_key
from tests.gateway_cluster import Peakdesk
from tests.s3_server import ACCESS_KEY, BUCKET, REGION, SECRET_KEY, S3Server
from tests.storage_helpers import make_events

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parent.parent


# --- helpers ------------------------------------------------------------------------------------

class LoopThread:
    """An asyncio loop in a thread, as a writer actor has: the test drives it from outside."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def keys_under(r: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(r.scan_iter(match=prefix + "*", count=1000))


def wipe_keys(r: redis.Redis, prefix: str) -> None:
    for key in keys_under(r, prefix):
        r.delete(key)


def _state(r: redis.Redis, prefix: str) -> dict[bytes, bytes]:
    """Every key under the prefix and its value, heartbeats aside (they expire on their own)."""
    return {k: r.dump(k) for k in keys_under(r, prefix) if b":hb:" not in k}


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --- the library with a real writer (no Ray) ----------------------------------------------------

def test_restore_holds_every_event_once_outbox_and_unacknowledged_batch_included(
        redis_url, redis_client, prefix, chdb_dsn, database, tmp_path):
    """Events in ClickHouse, in the outbox (acknowledged by hosts while the writers were paused),
    and a batch a writer stored but did not acknowledge (its pending list): after backup, wipe
    and restore, the restarted writer leaves each event in ClickHouse exactly once."""
    loop = LoopThread()
    writer = OutboxWriter(redis_url, lambda: ClickHouseSink(chdb_dsn, database), [0, 1], prefix=prefix,
                          database=database, name="writer-0", block_ms=50, linger_ms=1, heartbeat_s=0.2)
    task = loop.call(_start(writer))
    first, second, third = make_events(40, session="s1"), make_events(7, session="s2"), make_events(5, session="s3")

    def commit(shard, events):
        pipe = redis_client.pipeline(transaction=True)
        pipe.set(f"{prefix}snap:{shard}:{events[0].session_id}", orjson.dumps([e.event_id for e in events]))
        outbox.append(pipe, prefix, shard, events)
        pipe.execute()

    commit(0, first)
    loop.call(writer.wait_for(lambda s: s["events_written"] >= 40, 20))
    redis_client.set(f"{prefix}m:demo:config", b"kept forever")
    redis_client.set(f"{prefix}m:demo:presence:x", b"short-lived", px=600_000)
    with bk.WritersPause(redis_url, prefix, ["writer-0"], timeout_s=10) as pause:
        assert writer.stats()["state"] == "paused"
        commit(1, second)                        # acknowledged to its sender, waiting in the outbox
        commit(0, third)
        # a batch stored but not acknowledged (the writer died in between): pending, and in ClickHouse
        stream = outbox.stream_key(prefix, 0)
        entries = loop.call(outbox.read(writer._redis, "writer-0", {stream: ">"}, 10))
        assert [e.count for e in entries] == [5]
        assert loop.call(writer.store(Batch(entries, redelivery=False)))
        time.sleep(0.3)
        assert writer.stats()["events_written"] == 40      # paused: nothing of the 12 moved

        def query(sql, params):
            return loop.call(writer.query(sql, params))

        def export(sql, params, fmt):
            return loop.call(writer.export(sql, params, fmt))
        manifest = bk.backup(bk.location(str(tmp_path / "b1")), redis_url=redis_url, prefix=prefix,
                             database=database, query=query, export=export, pause=pause)
    loop.call(writer.wait_for(lambda s: s["state"] == "running" and s["events_written"] >= 52, 20))
    assert manifest["clickhouse"]["events"] == 45 and manifest["outbox"]["events"] == 12
    assert manifest["outbox"]["pending_entries"] == 1 and manifest["outbox"]["already_in_clickhouse"] == 5
    assert manifest["events"] == {"total": 52, "by_type": {"message.sent": 52}}
    # 3 snapshots, 2 outbox streams, the backlog counter, config, presence, the merchant's wrapped data
    # keys (storage/crypto.py: backups carry them); no heartbeat, no pause key
    assert manifest["redis"]["keys"] == 9
    loop.call(_stop(writer, task))

    # everything gone, then restored (into the same chDB path: one per test process)
    wipe_keys(redis_client, prefix)
    with bk.open_backup(bk.location(str(tmp_path / "b1"))) as b:
        done = bk.restore(b, redis_url=redis_url, clickhouse_dsn=chdb_dsn, wipe=True)
    assert done["events"]["clickhouse"] == 45 and done["events"]["outbox"] == 12
    assert redis_client.get(f"{prefix}m:demo:config") == b"kept forever"
    assert 590_000 < redis_client.pttl(f"{prefix}m:demo:presence:x") <= 600_000
    assert redis_client.get(pause_key(prefix)) is None

    again = OutboxWriter(redis_url, lambda: ClickHouseSink(chdb_dsn, database), [0, 1], prefix=prefix,
                         database=database, name="writer-0", block_ms=50, linger_ms=1, heartbeat_s=0.2)
    task = loop.call(_start(again))
    loop.call(again.wait_for(lambda s: s["events_written"] >= 12, 20))
    rows = loop.call(again.query("SELECT count(), uniqExact(event_id) FROM events", None))
    assert rows == [(52, 52)]
    ids = {r[0] for r in loop.call(again.query("SELECT toString(event_id) FROM events", None))}
    assert ids == {e.event_id for e in first + second + third}
    assert int(redis_client.get(outbox.backlog_key(prefix))) == 0
    loop.call(_stop(again, task))
    loop.close()


async def _start(writer: OutboxWriter) -> asyncio.Task:
    await writer.open()
    return asyncio.get_running_loop().create_task(writer.run())


async def _stop(writer: OutboxWriter, task: asyncio.Task) -> None:
    writer.stop()
    await task
    await writer.close()


def test_backup_and_restore_with_a_clickhouse_server(clickhouse_shim, redis_url, redis_client, prefix, database,
                                                    tmp_path):
    """The http:// path: export and restore (TRUNCATE with --wipe, Parquet inserts) over HTTP."""
    sink = ClickHouseSink(clickhouse_shim.dsn, database)
    sink.insert(make_events(30, session="a") + make_events(5, session="b"), redelivery=False)
    redis_client.set(f"{prefix}m:demo:config", b"{}")
    manifest = bk.backup(bk.location(str(tmp_path / "b")), redis_url=redis_url, prefix=prefix, database=database,
                         query=sink.query, export=sink.export)
    assert manifest["clickhouse"]["by_type"] == {"message.sent": 35} and manifest["redis"]["keys"] == 1
    redis_client.delete(f"{prefix}m:demo:config")
    with bk.open_backup(bk.location(str(tmp_path / "b"))) as b:
        done = bk.restore(b, redis_url=redis_url, clickhouse_dsn=clickhouse_shim.dsn, wipe=True)
    assert done["wiped"] == {"keys": 0, "events": 35} and done["events"]["clickhouse"] == 35
    assert sink.query("SELECT count(), uniqExact(event_id), uniqExact(session_id) FROM events") == [(35, 35, 2)]
    assert redis_client.get(f"{prefix}m:demo:config") == b"{}"
    sink.close()


# --- a whole cluster: conversations, backup to a directory and to S3, wipe, restore ---------------

NAMESPACE = "pd-test-backup"
COUNTS_SQL = "SELECT type, count(), uniqExact(event_id) FROM events GROUP BY type ORDER BY type"
MESSAGES_SQL = ("SELECT session_id, seq, toString(event_id), payload FROM events WHERE type = 'message.sent'"
                " ORDER BY session_id, seq, event_id")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


def _writer(pd: Peakdesk):
    return next(iter(pd.cluster.writers.values()))


def _query(pd: Peakdesk, sql: str, params: dict | None = None) -> list:
    return ray.get(_writer(pd).query.remote(sql, params), timeout=60)


def _drained(pd: Peakdesk, r: redis.Redis, prefix: str, total: int, timeout: float = 30) -> dict:
    """Event counts per type once the outbox is empty and ClickHouse holds `total` events."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _query(pd, COUNTS_SQL)
        counts = {t: n for t, n, _ in rows}
        if int(r.get(outbox.backlog_key(prefix)) or 0) == 0 and sum(counts.values()) >= total:
            assert all(n == unique for _, n, unique in rows), f"an event stored twice: {rows}"
            return counts
        assert time.monotonic() < deadline, f"outbox not drained: {counts}, backlog {r.get(outbox.backlog_key(prefix))}"
        time.sleep(0.2)


def _history(pd: Peakdesk, r: redis.Redis, prefix: str, sessions: list[str]) -> dict:
    """What a conversation is: its log in Redis (every entry, raw) and its message events."""
    logs = {s: r.xrange(f"{prefix}m:demo:log:session:{s}") for s in sessions}
    return {"logs": logs, "messages": _query(pd, MESSAGES_SQL)}


async def _replay(pd: Peakdesk, token: str, session: str) -> list[tuple]:
    """What a customer reconnecting sees: every message of the conversation, from the start."""
    from gateway.client import connect

    async with connect(pd.url, token) as c:
        last = await c.subscribe(session, after=0)
        seen = []
        with trio.move_on_after(3):
            while not seen or seen[-1][0] < last:
                frame = await c.next_message(session, timeout=3)
                seen.append((frame["seq"], (frame.get("from") or {}).get("kind"), frame.get("content")))
        return seen


@pytest.fixture(scope="module")
def original(ray_session, redis_server, tmp_path_factory, s3):
    """A cluster that held conversations, backed up (to a directory and to S3) while some of its
    events still waited in the outbox; stopped. Yields what it held and where its backups are."""
    from gateway.client import connect
    from tests.test_routing_ws import agent, group, online
    from tests.test_tickets_e2e import notice

    prefix = f"bk{uuid.uuid4().hex[:6]}:"
    data_dir = tmp_path_factory.mktemp("backup-pd")
    r = redis.Redis.from_url(redis_server.url)
    t0 = time.monotonic()
    pd = Peakdesk(redis_server.url, data_dir, NAMESPACE, prefix)
    g = group(pd)
    _, agent_token = agent(pd, [g])
    tokens = [pd.visitor_token(), pd.visitor_token()]
    pause = bk.WritersPause(redis_server.url, prefix, list(pd.cluster.writers), timeout_s=20)

    async def conversations():
        async with connect(pd.url, agent_token) as a, connect(pd.url, tokens[0]) as c1, \
                connect(pd.url, tokens[1]) as c2:
            await online(a)
            s1 = await c1.open(group=g)
            await a.until("assigned", session=s1)
            await a.subscribe(s1)
            await c1.send_message(s1, "text", {"text": "我的快递到哪了？ Where is my parcel?"})
            await a.next_message(s1)
            await a.send_message(s1, "text", {"text": "马上帮您查 Checking now"})
            ticket = pd.post("/api/v1/tickets", {"title": "外箱破损 Box damaged", "department": "after_sales",
                                                 "session_id": s1}, agent_token)
            await notice(c1, s1)                              # the customer is told of the ticket
            await a.close(s1)
            await c1.until("event", event="session.closed")
            await c1.rate(s1, 5, "很好 great")
            await c1.until("event", event="csat.rated")
            s2 = await c2.open(group=g)
            await a.until("assigned", session=s2)
            await a.subscribe(s2)
            await c2.send_message(s2, "text", {"text": "还在吗？ Still there?"})
            await a.next_message(s2)
            await trio.to_thread.run_sync(pause.__enter__)     # the writers stop moving events ...
            for n in range(3):                                # ... but conversations go on
                await c2.send_message(s2, "text", {"text": f"第{n}条 order {n}"})
            await a.send_message(s2, "text", {"text": "好的，稍等 One moment"})
            await c2.next_message(s2)
            return [s1, s2], ticket["ticket_id"]

    sessions, ticket = trio.run(conversations)
    time.sleep(1)   # the disconnections settle
    export_fn = lambda sql, p, fmt: ray.get(_writer(pd).export.remote(sql, p, fmt), timeout=60)   # noqa: E731
    common = dict(redis_url=redis_server.url, prefix=prefix, database="peakdesk",
                  query=lambda sql, p: _query(pd, sql, p), export=export_fn, pause=pause)
    to_dir = tmp_path_factory.mktemp("backups") / "nightly"
    s3_url = f"s3://{BUCKET}/{prefix.rstrip(':')}/nightly"
    t_backup = time.monotonic()
    manifests = [bk.backup(bk.location(str(to_dir)), **common),
                 bk.backup(bk.location(s3_url, s3_client=s3.client()), **common)]
    backup_s = time.monotonic() - t_backup
    pause.__exit__(None, None, None)
    assert manifests[0]["outbox"]["events"] >= 4, manifests[0]["outbox"]   # the backup holds unwritten events
    counts = _drained(pd, r, prefix, manifests[0]["events"]["total"])
    history = _history(pd, r, prefix, sessions)
    replay = trio.run(_replay, pd, tokens[1], sessions[1])
    pd.stop()
    print(f"original cluster: {time.monotonic() - t0:.1f} s; both backups {backup_s:.2f} s; "
          f"timings {[m['timings'] for m in manifests]}; manifest events {manifests[0]['events']}")
    yield {"prefix": prefix, "data_dir": data_dir, "dir": to_dir, "s3_url": s3_url, "manifests": manifests,
           "counts": counts, "history": history, "replay": replay, "tokens": tokens, "sessions": sessions,
           "ticket": ticket, "r": r}
    r.close()


def _restore_cli(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """`peakdesk restore` as an operator runs it: its own process (it opens the data dir's chDB,
    and a process holds one chDB path at most)."""
    return subprocess.run([sys.executable, "-m", "cli", "restore", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def _check_restored(world: dict, redis_url: str, namespace: str) -> None:
    r, prefix = world["r"], world["prefix"]
    pd = Peakdesk(redis_url, world["data_dir"], namespace, prefix)
    try:
        counts = _drained(pd, r, prefix, sum(world["counts"].values()))
        assert counts == world["counts"]                                   # the same events, per type, once
        assert counts == world["manifests"][0]["events"]["by_type"]
        history = _history(pd, r, prefix, world["sessions"])
        assert history["logs"] == world["history"]["logs"]                 # the same conversation logs
        assert history["messages"] == world["history"]["messages"]         # the same message events
        assert pd.request("GET", f"/api/v1/tickets/{world['ticket']}", None, pd.owner_token)["session_id"] \
            == world["sessions"][0]
        replay = trio.run(_replay, pd, world["tokens"][1], world["sessions"][1])
        assert replay == world["replay"] and len(replay) == 5              # the customer reads the same
    finally:
        pd.stop()


def test_a_backup_in_a_directory_restores_onto_an_empty_system(original, redis_url):
    import shutil

    manifest = original["manifests"][0]
    assert manifest["format"] == bk.FORMAT and manifest["prefix"] == original["prefix"]
    assert manifest["clickhouse"]["events"] + manifest["outbox"]["events"] == manifest["events"]["total"]
    assert {"message.sent", "session.created", "session.closed", "csat.rated", "ticket.created"} \
        <= set(manifest["events"]["by_type"])
    # lost: every key under the prefix, every event (the chDB directory)
    wipe_keys(original["r"], original["prefix"])
    shutil.rmtree(original["data_dir"] / "clickhouse")
    t0 = time.monotonic()
    done = _restore_cli(["--from", str(original["dir"]), "--data-dir", str(original["data_dir"]),
                         "--redis-url", redis_url])
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    print(f"restore from a directory: {time.monotonic() - t0:.1f} s (command), {out['seconds']} s (work)")
    assert out["events"]["clickhouse"] == manifest["clickhouse"]["events"]
    assert out["events"]["outbox"] == manifest["outbox"]["events"]
    assert out["keys"]["restored"] == manifest["redis"]["keys"]
    _check_restored(original, redis_url, NAMESPACE + "-dir")


def test_a_backup_in_s3_restores_over_existing_data_only_with_wipe(original, redis_url, s3):
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION}
    args = ["--from", original["s3_url"], "--s3-endpoint-url", s3.endpoint_url,
            "--data-dir", str(original["data_dir"]), "--redis-url", redis_url]
    r, prefix = original["r"], original["prefix"]
    with pytest.raises(bk.BackupInputError, match="already holds objects"):   # one backup per prefix
        bk.location(original["s3_url"], s3_client=s3.client()).check_writable()
    before = _state(r, prefix)
    assert before                                       # a peakdesk stopped here: its data is in place
    refused = _restore_cli(args, env)
    assert refused.returncode == 2, refused.stderr
    assert "not empty" in refused.stderr and "--wipe" in refused.stderr
    assert _state(r, prefix) == before                  # (its heartbeats may have expired meanwhile)
    done = _restore_cli([*args, "--wipe"], env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["wiped"]["keys"] >= len(before)
    assert out["wiped"]["events"] == sum(original["counts"].values())   # the refusal had left them all
    assert out["events"]["clickhouse"] == original["manifests"][1]["clickhouse"]["events"]
    _check_restored(original, redis_url, NAMESPACE + "-s3")


# --- bad input: a clear error naming what is wrong, exit status 2, nothing changed ---------------

def _cli(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli.main, list(args), env=env)


@pytest.fixture
def small_backup(redis_url, redis_client, prefix, chdb_dsn, database, tmp_path):
    """A backup of a few keys and events, made without a cluster (no writer to pause)."""
    sink = ClickHouseSink(chdb_dsn, database)
    sink.insert(make_events(20), redelivery=False)
    redis_client.set(f"{prefix}m:demo:config", b"{}")
    redis_client.hset(f"{prefix}m:demo:dir", "session:s1", "host-0")
    where = tmp_path / "small"
    bk.backup(bk.location(str(where)), redis_url=redis_url, prefix=prefix, database=database,
              query=sink.query, export=sink.export)
    sink.close()
    wipe_keys(redis_client, prefix)
    return where


def test_a_restore_never_brings_back_the_keys_of_a_shredded_merchant(redis_url, redis_client, prefix, chdb_dsn,
                                                                    database, tmp_path):
    """Right to erasure survives restores: a merchant shredded after the backup stays shredded
    (its tombstone is kept, the backup's copy of its keys left out); the others read as before."""
    from storage import crypto

    ring = crypto.keyring(redis_client, prefix)
    redis_client.set(f"{prefix}m:erased:customer:c1", ring.seal("erased", "张三 13800138000".encode()))
    redis_client.set(f"{prefix}m:kept:customer:c1", ring.seal("kept", "李四 13900139000".encode()))
    sink = ClickHouseSink(chdb_dsn, database)
    sink.insert(make_events(5), redelivery=False)
    bk.backup(bk.location(str(tmp_path / "b")), redis_url=redis_url, prefix=prefix, database=database,
              query=sink.query, export=sink.export)
    sink.close()
    ring.shred("erased")
    with bk.open_backup(bk.location(str(tmp_path / "b"))) as b:
        done = bk.restore(b, redis_url=redis_url, clickhouse_dsn=chdb_dsn, wipe=True)
    assert done["shredded_kept"] == ["erased"]
    assert redis_client.hkeys(f"{prefix}keys:erased") == [b"shredded"]
    ring.refresh()
    assert ring.open("kept", redis_client.get(f"{prefix}m:kept:customer:c1")).decode() == "李四 13900139000"
    with pytest.raises(crypto.Shredded):
        ring.open("erased", redis_client.get(f"{prefix}m:erased:customer:c1"))


def test_restore_refuses_a_missing_foreign_or_damaged_backup_and_changes_nothing(
        small_backup, redis_url, redis_client, prefix, tmp_path):
    target = ["--data-dir", str(tmp_path / "data"), "--redis-url", redis_url]

    def refused(source: str, *words: str, env: dict | None = None) -> str:
        result = _cli("restore", "--from", source, *target, env=env)
        assert result.exit_code == 2, result.output
        assert all(w in result.output for w in words), result.output
        assert keys_under(redis_client, prefix) == []            # nothing restored, nothing changed
        return result.output

    refused(str(tmp_path / "nowhere"), "no backup directory", str(tmp_path / "nowhere"))
    intact = tree(small_backup)
    manifest = orjson.loads(intact["manifest.json"])
    assert manifest["redis"]["keys"] == 2 and manifest["clickhouse"]["events"] == 20

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"format": "clickhouse-backup", "version": 2}))
    refused(str(foreign), "not a peakdesk backup manifest", "clickhouse-backup")
    (foreign / "manifest.json").write_text(json.dumps({**manifest, "format_version": 7}))
    refused(str(foreign), "format_version 7")
    (foreign / "manifest.json").write_text("{not json")
    refused(str(foreign), "manifest.json is not JSON")
    (foreign / "manifest.json").unlink()
    refused(str(foreign), "manifest.json is missing")

    damaged = small_backup / "events" / "events-00001.parquet"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    refused(str(small_backup), "events/events-00001.parquet does not match its checksum")
    (small_backup / "redis.msgpack").unlink()
    refused(str(small_backup), "redis.msgpack is missing")

    dead = f"http://127.0.0.1:{_free_port()}"
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1"}
    result = _cli("restore", "--from", "s3://peakdesk-backups/nightly", "--s3-endpoint-url", dead, *target, env=env)
    assert result.exit_code == 2 and "unreachable" in result.output and dead in result.output, result.output
    refused("s3://Bad_Bucket/x", "is not s3://BUCKET/PREFIX")
    refused("ftp://host/x", "a directory or s3://BUCKET/PREFIX")


def test_backup_refuses_a_bad_destination_before_touching_the_cluster(tmp_path, redis_url, prefix):
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.txt").write_text("yesterday")
    for args, words in (
            (["--to", str(full)], ["is not empty"]),
            (["--to", str(tmp_path / "no" / "such" / "dir")], ["does not exist"]),
            (["--to", "s3://peakdesk-backups/x", "--s3-endpoint-url", f"http://127.0.0.1:{_free_port()}"],
             ["unreachable"]),
            (["--to", str(tmp_path / "new"), "--data-dir", str(tmp_path / "no-peakdesk")], ["no running peakdesk"]),
            (["--to", str(tmp_path / "new"), "--redis-url", redis_url, "--prefix", prefix],
             ["no peakdesk cluster recorded"])):
        result = _cli("backup", *args, env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                                            "AWS_REGION": "us-east-1"})
        assert result.exit_code == 2 and all(w in result.output for w in words), (args, result.output)
    assert not (tmp_path / "new").exists() and tree(full) == {"old.txt": b"yesterday"}


def test_restore_refuses_a_running_peakdesk_and_a_second_backup_waits_its_turn(
        small_backup, redis_url, redis_client, prefix, chdb_dsn):
    beat = f"{prefix}hb:host:host-0"
    stop = threading.Event()

    def heartbeat():   # a live host: its heartbeat is renewed every second
        while not stop.is_set():
            redis_client.set(beat, b"{}", px=10_000)
            stop.wait(1)
    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        with bk.open_backup(bk.location(str(small_backup))) as b:
            with pytest.raises(bk.BackupInputError, match="peakdesk is running .*hb:host:host-0"):
                bk.restore(b, redis_url=redis_url, clickhouse_dsn=chdb_dsn)
    finally:
        stop.set()
        thread.join()
    assert keys_under(redis_client, prefix) == [beat.encode()]
    with bk.WritersPause(redis_url, prefix, timeout_s=5):
        with pytest.raises(bk.BackupInputError, match="already paused by backup-"):
            bk.WritersPause(redis_url, prefix, timeout_s=5).__enter__()
    assert redis_client.get(pause_key(prefix)) is None


def test_a_backup_that_fails_on_the_way_keeps_nothing_and_lets_the_writers_go(
        redis_url, redis_client, prefix, chdb_dsn, database, tmp_path):
    from storage.events import SinkUnavailable

    sink = ClickHouseSink(chdb_dsn, database)
    sink.insert(make_events(3), redelivery=False)
    redis_client.set(f"{prefix}m:demo:config", b"{}")

    def export(sql, params, fmt):
        raise SinkUnavailable("ClickHouse went away")
    with pytest.raises(bk.BackupError, match="SinkUnavailable: ClickHouse went away; nothing was kept"):
        bk.backup(bk.location(str(tmp_path / "b")), redis_url=redis_url, prefix=prefix, database=database,
                  query=sink.query, export=export)
    sink.close()
    assert not (tmp_path / "b").exists() and redis_client.get(pause_key(prefix)) is None
    assert keys_under(redis_client, prefix) == [f"{prefix}m:demo:config".encode()]


def _free_port() -> int:
    from storage.redis_server import free_port

    return free_port()
