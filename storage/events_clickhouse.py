"""`ClickHouseSink`: the EventSink over clickhouse-connect, embedded or remote.

One class, one code path: `chdb:///abs/path` opens ClickHouse's engine in this process
(clickhouse-connect's chdb backend), `http://user:pass@host:8123` talks to a server. Both go
through `clickhouse_connect.get_client(dsn=...)`.

Exactly once by event id, in three layers:
1. Every batch is one columnar insert with an `insert_deduplication_token` derived from its
   event ids: a batch re-sent unchanged (the writer retried after a timeout, or re-read its
   pending outbox entries) is dropped by the server (`non_replicated_deduplication_window`).
2. A batch that may have been stored before (`redelivery=True`) is first filtered against
   the table: ids already stored are dropped. This also covers a batch that only overlaps
   one stored earlier, which the token cannot recognise.
3. The table is a ReplacingMergeTree keyed on the event, the final net: copies that slip
   through both (a window overflow) collapse at merge time.

chDB allows one data path per process: open every sink of a process on the same path.
"""
from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any, Sequence

import clickhouse_connect
import orjson
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from storage.events import Event, SinkUnavailable
from storage.migrations import migrate

TABLE = "events"
# (column, ClickHouse type): passing the types saves a DESCRIBE round trip per insert.
COLUMNS = (
    ("event_id", "UUID"), ("merchant_id", "LowCardinality(String)"),
    ("type", "LowCardinality(String)"), ("actor_key", "String"), ("seq", "UInt64"),
    ("session_id", "String"), ("ts", "DateTime64(3, 'UTC')"),
    ("channel", "LowCardinality(String)"), ("agent_id", "String"), ("customer_id", "String"),
    ("group_id", "String"), ("payload", "String"),
)
# Ids per redelivery lookup: 2,000 quoted UUIDs are ~80 KB of SQL, well under the server's
# default max_query_size (256 KiB) that a whole 5,000-event batch would exceed.
LOOKUP_CHUNK = 2000
# Which of some ids are stored. Client-side binding (%(name)s) puts the ids in the POST body,
# not the URL; merchant and ts range select partitions and primary-key ranges, the ids then
# go through the key's last column and the bloom filter.
LOOKUP_SQL = (
    f"SELECT toString(event_id) FROM {TABLE} WHERE merchant_id IN %(m)s"
    " AND ts BETWEEN fromUnixTimestamp64Milli(%(lo)s, 'UTC') AND fromUnixTimestamp64Milli(%(hi)s, 'UTC')"
    " AND event_id IN %(ids)s"
)


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_id(event_id: str) -> str:
    """The id as toString(UUID) spells it, so stored and batch ids compare as strings."""
    return event_id if _CANONICAL_UUID.fullmatch(event_id) else str(uuid.UUID(event_id))


def dedup_token(events: Sequence[Event]) -> str:
    """Same set of event ids, same token — whatever the order the batch was assembled in."""
    digest = hashlib.blake2b(digest_size=16)
    for event_id in sorted(e.event_id for e in events):
        digest.update(event_id.encode())
        digest.update(b"\n")
    return f"pd-events-{digest.hexdigest()}"


def to_columns(events: Sequence[Event]) -> list[list]:
    """Column-oriented data in COLUMNS order; ts stays integer milliseconds (DateTime64(3) ticks)."""
    return [
        [e.event_id for e in events], [e.merchant_id for e in events], [e.type for e in events],
        [e.actor_key for e in events], [e.seq for e in events], [e.session_id for e in events],
        [e.ts for e in events], [e.channel for e in events], [e.agent_id for e in events],
        [e.customer_id for e in events], [e.group_id for e in events],
        [orjson.dumps(e.payload).decode() for e in events],
    ]


class ClickHouseSink:
    """The `EventSink` over ClickHouse (see storage.events for the contract).

    Synchronous and not thread-safe: one worker thread owns it (storage.writer)."""

    def __init__(self, dsn: str, database: str = "peakdesk", **client_options: Any):
        """Connect, create `database` if missing and migrate it. Raises SinkUnavailable when
        the server cannot be reached; other errors (a bad DSN, a second chDB path in this
        process, a server refusing the DDL) propagate as they are: retrying will not help."""
        self.dsn = dsn
        self.database = database
        if not self.embedded:
            # No HTTP session: it would pin state on one server and refuse concurrent use,
            # and the sink needs neither.
            client_options = {"autogenerate_session_id": False, **client_options}
        try:
            self.client = clickhouse_connect.get_client(dsn=dsn, **client_options)
            migrate(self.client, database)
        except OperationalError as exc:
            raise SinkUnavailable(f"ClickHouse at {_redacted(dsn)} is unreachable: {exc}") from exc
        # Unqualified table names in query() resolve to our database from here on.
        self.client.database = database

    @property
    def embedded(self) -> bool:
        return self.dsn.startswith("chdb:")

    def insert(self, events: Sequence[Event], *, redelivery: bool = True) -> int:
        """Store `events` once each; returns how many were sent (not found already stored).

        `redelivery=False` is the caller's promise that no event of this batch was ever sent
        before (a writer's first read of new outbox entries); it skips the lookup. Raises
        SinkUnavailable if the server is unreachable or refused the batch."""
        if redelivery and events:
            stored = self.stored_ids(events)
            events = [e for e in events if canonical_id(e.event_id) not in stored]
        if not events:
            return 0
        try:
            self.client.insert(
                TABLE, to_columns(events), column_names=[c for c, _ in COLUMNS],
                column_type_names=[t for _, t in COLUMNS], column_oriented=True,
                settings={"insert_deduplication_token": dedup_token(events)},
            )
        except DatabaseError as exc:  # OperationalError (transport) is one of these
            raise SinkUnavailable(f"insert of {len(events)} events failed: {exc}") from exc
        return len(events)

    def stored_ids(self, events: Sequence[Event]) -> set[str]:
        """The ids among `events` already in the table. Bounded by the batch's merchants and
        ts range, so partition pruning, the primary key and the id bloom filter all apply."""
        found: set[str] = set()
        merchants = tuple(sorted({e.merchant_id for e in events}))
        lo, hi = min(e.ts for e in events), max(e.ts for e in events)
        ids = [e.event_id for e in events]
        for start in range(0, len(ids), LOOKUP_CHUNK):
            rows = self._lookup(merchants, lo, hi, tuple(ids[start:start + LOOKUP_CHUNK]))
            found.update(r[0] for r in rows)
        return found

    def _lookup(self, merchants: tuple, lo: int, hi: int, ids: tuple) -> list[tuple]:
        try:
            return self.client.query(LOOKUP_SQL, parameters={"m": merchants, "lo": lo, "hi": hi, "ids": ids}).result_rows
        except DatabaseError as exc:
            raise SinkUnavailable(f"redelivery lookup failed: {exc}") from exc

    def ping(self) -> None:
        """Returns when the engine answers; raises SinkUnavailable otherwise."""
        if not self.client.ping():
            raise SinkUnavailable(f"ClickHouse at {_redacted(self.dsn)} does not answer")

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        """Rows of a read query in this sink's database. Raises SinkUnavailable when the
        server is unreachable; a query the server rejects raises clickhouse-connect's
        DatabaseError unchanged (the SQL is wrong, retrying will not help)."""
        try:
            return self.client.query(sql, parameters=parameters).result_rows
        except OperationalError as exc:
            raise SinkUnavailable(f"query failed: {exc}") from exc

    def export(self, sql: str, parameters: dict[str, Any] | None, fmt: str) -> bytes:
        """A read query's result as bytes in a ClickHouse output format (Parquet, CSVWithNames...)."""
        try:
            return self.client.raw_query(sql, parameters=parameters, fmt=fmt)
        except OperationalError as exc:
            raise SinkUnavailable(f"export failed: {exc}") from exc

    def close(self) -> None:
        self.client.close()


def _redacted(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at:
        return dsn
    return f"{scheme}{sep}{creds.partition(':')[0]}:***@{host}"
