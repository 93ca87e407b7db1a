"""Fixtures for ClickHouse-backed tests: one chDB path per test process, a database per test,
and an HTTP shim server over its own chDB (tests.clickhouse_http_shim).

Load with `pytest_plugins = ["tests.storage_fixtures"]` in a test module (or the root
conftest): registered as a plugin, the session fixtures exist once per process. Imported
into two modules by name instead, a session fixture would run once per module — and chDB
refuses a second data path in one process.
"""
from __future__ import annotations

import uuid

import pytest

from storage.events_clickhouse import ClickHouseSink
from storage.redis_server import free_port
from tests.clickhouse_http_shim import ClickHouseShim


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory) -> str:
    """The one embedded chDB data path of this test process."""
    return f"chdb://{tmp_path_factory.mktemp('chdb') / 'data'}"


@pytest.fixture
def database() -> str:
    """A database of its own for each test (the chDB path and the shim are shared)."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def _shim_process(tmp_path_factory):
    shim = ClickHouseShim(tmp_path_factory.mktemp("shim") / "data", free_port()).start()
    yield shim
    shim.stop()


@pytest.fixture
def clickhouse_shim(_shim_process) -> ClickHouseShim:
    """The shared shim server; a test may stop it, and gets it back running afterwards."""
    if _shim_process.process.poll() is not None:
        _shim_process.start()
    yield _shim_process
    if _shim_process.process.poll() is not None:
        _shim_process.start()


@pytest.fixture(params=["chdb", "http"])
def sink_dsn(request, chdb_dsn) -> str:
    """Each conformance test runs against embedded chDB and against the HTTP server path."""
    if request.param == "chdb":
        return chdb_dsn
    return request.getfixturevalue("clickhouse_shim").dsn


@pytest.fixture
def sink(sink_dsn, database):
    s = ClickHouseSink(sink_dsn, database)
    yield s
    s.close()
