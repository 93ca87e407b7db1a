"""Shared fixtures: a real Redis server and real chDB per test session, key prefixes per test."""
from __future__ import annotations

import base64
import os
import uuid

import pytest
import redis

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# One master key for the run (storage/crypto.py): every process the tests start — Ray workers,
# CLI subprocesses — inherits it, as a deployment's would from its secret.
os.environ.setdefault("PEAKDESK_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
os.environ.setdefault("PEAKDESK_KEY_REFRESH_S", "1")   # rotations and shreds reach every process in 1 s

from storage.redis_server import start_redis  # noqa: E402

# chDB allows one data path per process: its fixtures must exist once for the whole run.
pytest_plugins = ["tests.storage_fixtures"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server):
    return redis_server.url


@pytest.fixture
def redis_client(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def prefix():
    """A key prefix of its own for each test, so tests sharing one Redis never see each other."""
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray cluster for the whole run (it takes seconds to start): never attached to
    another cluster on the machine, with a small object store."""
    import ray

    ray.init(address="local", include_dashboard=False, object_store_memory=128 * 1024 * 1024,
             namespace="pd-test", logging_level="WARNING")
    yield ray
    ray.shutdown()
