"""The EventSink contract, one suite run against embedded chDB (`chdb://`) and a ClickHouse
HTTP endpoint (`http://`, the shim over chDB), plus the migrations it relies on."""
from __future__ import annotations

import dataclasses

import orjson
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from storage.events import ANALYTIC_COLUMNS, SinkUnavailable
from storage.events_clickhouse import LOOKUP_CHUNK, LOOKUP_SQL, ClickHouseSink, dedup_token
from storage.migrations import MigrationError, load_migrations
from storage.redis_server import free_port
from tests.storage_helpers import make_events


COUNTS = "SELECT count(), uniqExact(event_id) FROM events"  # no FINAL: rows as stored


def test_round_trip_keeps_every_column_and_unicode(sink):
    events = make_events(2, text="你好，订单在哪里？ Where is my order?")
    assert sink.insert(events) == 2
    rows = sink.query(
        "SELECT toString(event_id), merchant_id, type, actor_key, seq, session_id,"
        " toUnixTimestamp64Milli(ts), channel, agent_id, customer_id, group_id, payload,"
        " inserted_at > 0 FROM events ORDER BY seq")
    for e, row in zip(events, rows):
        assert row[:11] == (e.event_id, e.merchant_id, e.type, e.actor_key, e.seq, e.session_id,
                            e.ts, e.channel, e.agent_id, e.customer_id, e.group_id)
        assert orjson.loads(row[11]) == e.payload
        assert row[12] == 1


def test_same_batch_twice_is_stored_once(sink):
    events = make_events(5)
    assert sink.insert(events) == 5
    assert sink.insert(events) == 0
    assert sink.query(COUNTS) == [(5, 5)]


def test_ids_in_another_spelling_are_still_recognised_as_stored(sink):
    events = [dataclasses.replace(e, event_id=e.event_id.upper().replace("-", "")) for e in make_events(3)]
    sink.insert(events)
    assert sink.insert(events) == 0
    assert sink.query(COUNTS) == [(3, 3)]


def test_batch_resent_without_lookup_is_dropped_by_its_dedup_token(sink):
    events = make_events(5)
    sink.insert(events, redelivery=False)
    sink.insert(list(reversed(events)), redelivery=False)  # same ids, same token
    assert sink.query(COUNTS) == [(5, 5)]


def test_overlapping_batch_stores_only_the_new_events(sink):
    events = make_events(8)
    sink.insert(events[:5])
    assert sink.insert(events[3:]) == 3
    assert sink.query(COUNTS) == [(8, 8)]


def test_copies_that_slip_past_both_checks_collapse_on_merge(sink):
    events = make_events(6)
    sink.insert(events[:4], redelivery=False)
    sink.insert(events[2:], redelivery=False)  # overlap, different token, no lookup
    assert sink.query(COUNTS) == [(8, 6)]
    sink.query("OPTIMIZE TABLE events FINAL")
    assert sink.query(COUNTS) == [(6, 6)]


def test_lookup_finds_stored_ids_across_partitions_and_chunks(sink):
    march, april = make_events(3, ts0=1_740_787_200_000), make_events(3, ts0=1_743_465_600_000)
    many = make_events(LOOKUP_CHUNK + 10, merchant="m2")
    sink.insert(march + april + many)
    assert sink.stored_ids(march + april) == {e.event_id for e in march + april}
    assert len(sink.stored_ids(many + make_events(2, merchant="m2"))) == len(many)


def test_lookup_reads_only_the_batch_partition_and_key_range(sink):
    march, april = make_events(3, ts0=1_740_787_200_000), make_events(3, ts0=1_743_465_600_000)
    sink.insert(march + april)
    sink.insert(make_events(3, merchant="m2", ts0=april[0].ts))
    params = {"m": ("m1",), "lo": april[0].ts, "hi": april[-1].ts, "ids": tuple(e.event_id for e in april)}
    plan = "\n".join(r[0] for r in sink.query("EXPLAIN indexes = 1 " + LOOKUP_SQL, params))
    key_condition = plan.split("PrimaryKey", 1)[1].split("Condition:", 1)[1].splitlines()[0]
    assert all(column in key_condition for column in ("merchant_id", "toDate(ts)", "event_id"))
    assert "Name: event_id_bf" in plan
    assert "Parts: 1 | Granules: 1" in plan  # of 3 parts in 2 partitions


def test_dedup_token_depends_on_the_set_of_ids_only():
    events = make_events(3)
    assert dedup_token(events) == dedup_token(events[::-1])
    assert dedup_token(events) != dedup_token(events[:2])


def test_migrations_are_recorded_and_idempotent(sink, sink_dsn, database):
    again = ClickHouseSink(sink_dsn, database)  # migrates the same database a second time
    try:
        assert sorted(again.query("SELECT version, name FROM schema_migrations")) == [(1, "events"), (2, "report_columns")]
        columns = {r[0] for r in again.query("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'events'")}
        assert set(ANALYTIC_COLUMNS) <= columns
    finally:
        again.close()


def test_table_is_replacing_and_deduplicates_insert_blocks(sink):
    (create,) = sink.query("SELECT create_table_query FROM system.tables WHERE database = currentDatabase() AND name = 'events'")[0]
    assert "ReplacingMergeTree" in create
    assert "non_replicated_deduplication_window = 10000" in create
    assert "event_id_bf event_id TYPE bloom_filter" in create


def test_ping_and_parameterised_query(sink):
    sink.ping()
    sink.insert(make_events(3, merchant="m9"))
    assert sink.query("SELECT count() FROM events WHERE merchant_id = {m:String}", {"m": "m9"}) == [(3,)]


def test_query_the_server_rejects_raises_its_error(sink):
    with pytest.raises(DatabaseError) as info:
        sink.query("SELECT no_such_column FROM events")
    assert not isinstance(info.value, SinkUnavailable)


def test_unreachable_server_raises_sink_unavailable():
    with pytest.raises(SinkUnavailable) as info:
        ClickHouseSink(f"http://default:secret@127.0.0.1:{free_port()}", "peakdesk")
    assert info.value.__cause__ is not None
    assert "secret" not in str(info.value)


def test_insert_while_server_is_down_raises_sink_unavailable_then_succeeds(clickhouse_shim, database):
    sink = ClickHouseSink(clickhouse_shim.dsn, database)
    try:
        clickhouse_shim.stop()
        with pytest.raises(SinkUnavailable):
            sink.insert(make_events(2))
        with pytest.raises(SinkUnavailable):
            sink.ping()
        clickhouse_shim.start()
        sink.insert(make_events(2, session="s2"))
        assert sink.query(COUNTS) == [(2, 2)]
    finally:
        sink.close()


def test_migration_files_need_unique_numbered_names(tmp_path):
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0002_b.sql").write_text("SELECT 2;\n-- only a comment\n;\nSELECT 3")
    migrations = load_migrations(tmp_path)
    assert [m.version for m in migrations] == [1, 2]
    assert migrations[1].statements("db") == ["SELECT 2", "SELECT 3"]
    (tmp_path / "0002_c.sql").write_text("SELECT 4")
    with pytest.raises(MigrationError, match="appears twice"):
        load_migrations(tmp_path)
    (tmp_path / "0002_c.sql").unlink()
    (tmp_path / "3_bad.sql").write_text("")
    with pytest.raises(MigrationError, match="3_bad.sql"):
        load_migrations(tmp_path)
