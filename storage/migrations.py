"""Versioned ClickHouse schema migrations.

Migrations are the files `storage/migrations/NNNN_name.sql`, applied in version order. Each
file may hold several statements separated by `;` at the end of a line, and names its tables
as `{database}.table`; the placeholder is replaced by the quoted database name, so one set
of files serves any database (tests use one per test).

`schema_migrations` records each applied version. `migrate` applies only the versions it
does not find there, so running it again is a no-op. Statements are written to be
re-runnable (`IF NOT EXISTS`), because two processes may migrate at once, or a process may
die between applying a file and recording it: the next run then applies it again, harmlessly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.client import Client

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# A statement ends with `;` at the end of a line; no migration has `;` inside a string there.
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")

# ReplacingMergeTree: two processes migrating at once may both record a version; the
# duplicate row collapses and readers use DISTINCT meanwhile.
_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS {database}.schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


class MigrationError(Exception):
    """A migration file is malformed; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, database: str) -> list[str]:
        """The file's statements for `database`, without comment-only fragments."""
        text = self.sql.replace("{database}", quote_identifier(database))
        parts = (p.strip() for p in _STATEMENT_END.split(text))
        return [p for p in parts if p and not _only_comments(p)]


def _only_comments(fragment: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in fragment.splitlines())


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in `directory`, in version order. Versions must be unique."""
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name {path.name!r} is not NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"migration version {version} appears twice: {path.name!r}")
        found[version] = Migration(version, match.group(2), path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def ensure_database(client: Client, database: str) -> None:
    client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}", use_database=False)


def applied_versions(client: Client, database: str) -> set[int]:
    rows = client.query(
        f"SELECT DISTINCT version FROM {quote_identifier(database)}.schema_migrations"
    ).result_rows
    return {int(r[0]) for r in rows}


def migrate(client: Client, database: str = "peakdesk", directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Create `database` if missing and apply the migrations not yet recorded, in order.
    Returns the versions applied by this call (empty when the schema is current)."""
    ensure_database(client, database)
    client.command(_CREATE_MIGRATIONS_TABLE.replace("{database}", quote_identifier(database)), use_database=False)
    done = applied_versions(client, database)
    applied = []
    for migration in load_migrations(directory):
        if migration.version in done:
            continue
        for statement in migration.statements(database):
            client.command(statement, use_database=False)
        # Recorded only after every statement succeeded: a failure leaves the version
        # missing, and the next run retries the whole (re-runnable) file.
        client.insert(
            "schema_migrations", [[migration.version, migration.name]],
            column_names=["version", "name"], database=database,
        )
        applied.append(migration.version)
    return applied
