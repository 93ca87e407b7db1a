"""The outbox (Redis streams) and the writer that moves it into ClickHouse: exactly once,
through outages and a writer that dies between storing and acknowledging."""
from __future__ import annotations

import asyncio

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from storage import outbox
from storage.events import Event
from storage.events_clickhouse import ClickHouseSink
from storage.writer import OutboxWriter
from tests.storage_helpers import make_events, run


COUNTS = "SELECT count(), uniqExact(event_id) FROM events"
FAST = {"block_ms": 50, "backoff_initial_s": 0.02, "backoff_max_s": 0.2, "heartbeat_s": 0.05}


def append_rounds(redis_url: str, prefix: str, rounds: dict[int, list[Event]]) -> None:
    """Each shard's events appended the way a host commits: in one MULTI with its own writes."""
    client = redis.Redis.from_url(redis_url)
    try:
        for shard, events in rounds.items():
            pipe = client.pipeline(transaction=True)
            pipe.set(f"{prefix}snapshot:{shard}", b"state")
            outbox.append(pipe, prefix, shard, events)
            pipe.execute()
    finally:
        client.close()


def writer_for(redis_url, prefix, dsn, database, **options) -> OutboxWriter:
    return OutboxWriter(redis_url, lambda: ClickHouseSink(dsn, database), [0, 1],
                        prefix=prefix, **{**FAST, **options})


async def backlog(redis_url: str, prefix: str) -> dict:
    r = aioredis.from_url(redis_url)
    try:
        return await outbox.backlog(r, prefix)
    finally:
        await r.aclose()


async def run_until(writer: OutboxWriter, predicate, timeout: float = 30.0) -> dict:
    """Run the writer until its stats satisfy `predicate`, then stop it."""
    task = asyncio.create_task(writer.run())
    try:
        return await writer.wait_for(predicate, timeout)
    finally:
        writer.stop()
        await task


def test_encoded_batch_decodes_to_the_same_events():
    events = make_events(3, text="退货 refund")
    assert outbox.decode_batch(outbox.encode_batch(events)) == events


@pytest.mark.parametrize("field,value", [("event_id", "not-a-uuid"), ("event_id", "urn:uuid:" + "0" * 32),
                                         ("event_id", "A" * 8 + "-AAAA-4AAA-8AAA-" + "A" * 12), ("seq", -1), ("merchant_id", 7), ("payload", [1])])
def test_decode_rejects_events_the_table_would_refuse(field, value):
    wire = make_events(1)[0].to_wire()
    wire[{"event_id": "id", "seq": "q", "merchant_id": "m", "payload": "p"}[field]] = value
    with pytest.raises(ValueError, match=field if field != "event_id" else "UUID"):
        outbox.decode_batch(outbox.encode_batch([Event.from_wire(wire)]))


def test_backlog_counts_waiting_events_and_entries_per_shard(redis_url, prefix):
    append_rounds(redis_url, prefix, {0: make_events(3), 2: make_events(4, session="s2")})
    append_rounds(redis_url, prefix, {2: make_events(1, session="s3")})
    report = run(backlog(redis_url, prefix))
    assert report["events"] == 8
    assert report["entries"] == {"0": 1, "2": 2}


def test_asyncio_pipeline_appends_too(redis_url, prefix):
    async def scenario():
        r = aioredis.from_url(redis_url)
        async with r.pipeline(transaction=True) as pipe:
            outbox.append(pipe, prefix, 1, make_events(2))
            outbox.append(pipe, prefix, 1, [])  # nothing queued for no events
            await pipe.execute()
        report = await outbox.backlog(r, prefix)
        await r.aclose()
        return report

    assert run(scenario()) == {"events": 2, "entries": {"1": 1}, "pending": {"1": 0}}


def test_writer_stores_every_event_once_and_empties_the_backlog(redis_url, prefix, chdb_dsn, database):
    append_rounds(redis_url, prefix, {0: make_events(5), 1: make_events(7, session="s2")})
    append_rounds(redis_url, prefix, {0: make_events(3, session="s3")})
    writer = writer_for(redis_url, prefix, chdb_dsn, database)

    async def scenario():
        stats = await run_until(writer, lambda s: s["events_written"] >= 15)
        rows = await writer.query(COUNTS)
        await writer.close()
        return stats, rows, await backlog(redis_url, prefix)

    stats, rows, report = run(scenario())
    assert rows == [(15, 15)]
    assert report == {"events": 0, "entries": {"0": 0, "1": 0}, "pending": {"0": 0, "1": 0}}
    assert stats["events_written"] == 15 and stats["last_error"] is None


def test_writer_keeps_the_batch_while_clickhouse_is_down_and_drains_after(redis_url, prefix, clickhouse_shim, database):
    writer = writer_for(redis_url, prefix, clickhouse_shim.dsn, database)

    async def scenario():
        task = asyncio.create_task(writer.run())
        append_rounds(redis_url, prefix, {0: make_events(4)})
        await writer.wait_for(lambda s: s["events_written"] == 4, 30)
        clickhouse_shim.stop()
        append_rounds(redis_url, prefix, {0: make_events(5, session="s2"), 1: make_events(6, session="s3")})
        await writer.wait_for(lambda s: s["retries"] >= 3, 30)
        during = await backlog(redis_url, prefix), writer.stats()
        clickhouse_shim.start()
        await writer.wait_for(lambda s: s["events_written"] == 15, 30)
        writer.stop()
        await task
        rows = await writer.query(COUNTS)
        await writer.close()
        return during, rows, await backlog(redis_url, prefix)

    (waiting, stats), rows, after = run(scenario())
    assert waiting["events"] == 11 and stats["state"] == "retrying"
    assert "SinkUnavailable" in stats["last_error"]
    assert rows == [(15, 15)]
    assert after["events"] == 0


def test_writer_started_while_clickhouse_is_down_connects_when_it_returns(redis_url, prefix, clickhouse_shim, database):
    append_rounds(redis_url, prefix, {1: make_events(3)})
    clickhouse_shim.stop()
    writer = writer_for(redis_url, prefix, clickhouse_shim.dsn, database)

    async def scenario():
        task = asyncio.create_task(writer.run())
        await writer.wait_for(lambda s: s["retries"] >= 2, 30)
        clickhouse_shim.start()
        await writer.wait_for(lambda s: s["events_written"] == 3, 30)
        writer.stop()
        await task
        rows = await writer.query(COUNTS)
        await writer.close()
        return rows

    assert run(scenario()) == [(3, 3)]


def test_new_writer_rereads_entries_stored_but_not_acknowledged(redis_url, prefix, chdb_dsn, database):
    append_rounds(redis_url, prefix, {0: make_events(6), 1: make_events(4, session="s2")})

    async def dies_after_storing():
        doomed = writer_for(redis_url, prefix, chdb_dsn, database)
        await doomed.open()
        batch = await doomed.read_batch()
        assert await doomed.store(batch)
        await doomed.close()  # gone before acknowledging
        return await backlog(redis_url, prefix)

    async def successor():
        writer = writer_for(redis_url, prefix, chdb_dsn, database)
        stats = await run_until(writer, lambda s: s["events_written"] >= 10)
        rows = await writer.query(COUNTS)
        await writer.close()
        return stats, rows

    before = run(dies_after_storing())
    assert before["events"] == 10 and sum(before["pending"].values()) == 2
    stats, rows = run(successor())
    assert rows == [(10, 10)]
    assert stats["redelivered_batches"] >= 1 and stats["events_sent"] == 0
    assert run(backlog(redis_url, prefix))["events"] == 0


def test_writer_under_another_name_takes_over_idle_entries(redis_url, prefix, chdb_dsn, database):
    append_rounds(redis_url, prefix, {1: make_events(3)})

    async def scenario():
        doomed = writer_for(redis_url, prefix, chdb_dsn, database, name="writer-old")
        await doomed.open()
        await doomed.read_batch()
        await doomed.close()  # read, never stored
        heir = writer_for(redis_url, prefix, chdb_dsn, database, name="writer-new", claim_idle_ms=0)
        await run_until(heir, lambda s: s["events_written"] >= 3)
        rows = await heir.query(COUNTS)
        await heir.close()
        return rows

    assert run(scenario()) == [(3, 3)]
    assert run(backlog(redis_url, prefix))["events"] == 0


def test_undecodable_entry_moves_to_the_dead_letter_stream(redis_url, prefix, redis_client, chdb_dsn, database):
    redis_client.xadd(outbox.stream_key(prefix, 0), {"b": b"\xc1garbage", "n": 2})
    redis_client.incrby(outbox.backlog_key(prefix), 2)
    append_rounds(redis_url, prefix, {0: make_events(3)})
    writer = writer_for(redis_url, prefix, chdb_dsn, database)

    async def scenario():
        stats = await run_until(writer, lambda s: s["events_written"] >= 3 and s["dead_entries"] == 1)
        rows = await writer.query(COUNTS)
        await writer.close()
        return stats, rows

    _, rows = run(scenario())
    assert rows == [(3, 3)]
    dead = redis_client.xrange(outbox.dead_key(prefix))
    assert len(dead) == 1 and dead[0][1][b"b"] == b"\xc1garbage" and b"undecodable" in dead[0][1][b"error"]
    assert run(backlog(redis_url, prefix))["events"] == 0


def test_acknowledging_twice_takes_events_off_the_backlog_once(redis_url, prefix, chdb_dsn, database):
    append_rounds(redis_url, prefix, {0: make_events(4)})

    async def scenario():
        writer = writer_for(redis_url, prefix, chdb_dsn, database)
        await writer.open()
        batch = await writer.read_batch()
        await writer.store(batch)
        await writer.acknowledge(batch)
        await writer.acknowledge(batch)  # a retried acknowledgement whose reply was lost
        await writer.close()
        return await backlog(redis_url, prefix)

    assert run(scenario())["events"] == 0


def test_heartbeat_publishes_stats_with_a_ttl(redis_url, prefix, redis_client, chdb_dsn, database):
    append_rounds(redis_url, prefix, {0: make_events(2)})
    writer = writer_for(redis_url, prefix, chdb_dsn, database, name="writer-7")

    key = f"{prefix}hb:writer:writer-7"

    async def beat_seen():
        r = aioredis.from_url(redis_url)
        task = asyncio.create_task(writer.run())
        try:
            await writer.wait_for(lambda s: s["events_written"] >= 2, 30)
            while not await r.exists(key):  # the first beat is written as run() starts
                await asyncio.sleep(0.01)
        finally:
            writer.stop()
            await task
            await writer.close()
            await r.aclose()

    run(beat_seen())
    beat = orjson.loads(redis_client.get(key))
    assert beat["name"] == "writer-7" and beat["shards"] == [0, 1]
    assert 0 < redis_client.pttl(key) <= 10_000


def test_query_and_ping_run_through_the_writer(redis_url, prefix, chdb_dsn, database):
    writer = writer_for(redis_url, prefix, chdb_dsn, database)

    async def scenario():
        await writer.ping()
        rows = await writer.query("SELECT {x:UInt8} + 1", {"x": 1})
        await writer.close()
        return rows

    assert run(scenario()) == [(2,)]


def test_writer_rejects_bad_options(redis_url):
    with pytest.raises(ValueError, match="shards"):
        OutboxWriter(redis_url, lambda: None, [])
    with pytest.raises(ValueError, match="max_batch_events must be a positive number, got 0"):
        OutboxWriter(redis_url, lambda: None, [0], max_batch_events=0)
    with pytest.raises(TypeError, match="block_sec"):
        OutboxWriter(redis_url, lambda: None, [0], block_sec=1)
