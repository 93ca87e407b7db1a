"""`peakdesk up`: bring up Redis (unless given), Ray (unless given), the actors; wait for a
signal; bring everything down in order. Nothing it started outlives it."""
from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time

import orjson

from storage.crypto import CryptoError

from .settings import Settings

log = logging.getLogger("peakdesk")


class RedisUnreachable(Exception):
    pass


def _check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        raise RedisUnreachable(f"cannot reach Redis at {_redacted(url)}: {exc}") from exc
    finally:
        client.close()


def _redacted(url: str) -> str:
    from urllib.parse import urlparse

    u = urlparse(url)
    return u._replace(netloc=f"***@{u.hostname}:{u.port}").geturl() if u.password else url


def ensure_secret(path: str) -> None:
    import secrets

    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))


def _ensure_master_key(settings: Settings) -> None:
    """The data dir's master key is made on first start; one given by file or environment is used as it is."""
    from storage import crypto

    if crypto.ensure_own_master_key(settings.master_key_file, settings.master_key_path):
        print(f"peakdesk: created the master key {settings.master_key_path}: keep a copy apart from backups;"
              " without it nothing personal can be read", flush=True)
    crypto.configure(settings.master_key_path)


def _demo_merchant(settings: Settings):
    from .admin_cli import create_demo_merchant, run

    return run(settings.redis_url, settings.prefix, lambda rs: create_demo_merchant(rs, settings.data_dir))


def run_until_signalled(settings: Settings, stop: threading.Event, run_file_name: str) -> int:
    import ray

    from storage.redis_server import RedisServerError, start_redis

    from .cluster import Cluster

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    run_file = settings.data_dir / run_file_name
    redis_server = cluster = None
    try:
        if settings.redis_url is None:
            redis_server = start_redis(settings.data_dir / "redis")
            settings = dataclasses.replace(settings, redis_url=redis_server.url)
        _check_redis(settings.redis_url)
        ensure_secret(settings.secret_file)
        _ensure_master_key(settings)
        cluster = Cluster(settings)
        cluster.start()
        demo = _demo_merchant(settings)
        url = f"{'https' if settings.tls_cert_file else 'http'}://{settings.host}:{cluster.gateway_port}"
        run_file.write_bytes(orjson.dumps({"redis_url": settings.redis_url, "prefix": settings.prefix,
                                           "gateway_url": url, "pid": os.getpid(), "started": time.time(),
                                           "ray_address": ray.get_runtime_context().gcs_address,
                                           "namespace": settings.namespace,
                                           "master_key_file": settings.master_key_path}))
        print(f"peakdesk is up: {url}  (health: {url}/healthz; status: peakdesk status"
              f" --data-dir {settings.data_dir}; Ctrl-C stops)", flush=True)
        if demo:
            print(f"demo merchant created: log in with POST {url}/api/v1/auth/login and the merchant, username"
                  f" and password in {demo} (readable by you only)", flush=True)
        while not stop.wait(0.5):
            pass
        print("peakdesk: stopping", flush=True)
        return 0
    except RedisServerError as exc:
        print(f"peakdesk: cannot start Redis: {exc}", file=sys.stderr, flush=True)
        return 1
    except RedisUnreachable as exc:
        print(f"peakdesk: {exc}", file=sys.stderr, flush=True)
        return 1
    except CryptoError as exc:
        print(f"peakdesk: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # each step on its own: one that fails must not leave the later ones running
        for step in (lambda: run_file.unlink(missing_ok=True), cluster and cluster.stop,
                     lambda: ray.is_initialized() and ray.shutdown(), redis_server and redis_server.stop):
            if step:
                try:
                    step()
                except Exception:  # the shutdown boundary: say so and go on stopping the rest
                    log.exception("peakdesk: a step of stopping failed")
