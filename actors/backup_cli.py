"""What `peakdesk backup` and `peakdesk restore` do once their flags are parsed (storage.backup
holds the how and the consistency argument).

- backup: a running cluster. It attaches to the cluster's Ray (like `peakdesk scale`) only to
  reach a writer actor: in embedded mode chDB lives in the writer's process, so the events are
  exported through it; pausing the writers and dumping Redis go through Redis itself.
- restore: a stopped peakdesk. It writes Redis (the one given, or the bundled one it starts on
  the data dir, as `peakdesk up` would) and ClickHouse (the URL given, or the data dir's chDB,
  opened in this process: no writer holds it while peakdesk is stopped) directly.
"""
from __future__ import annotations

import os
from pathlib import Path

import orjson

from storage import backup as bk


def run_backup(to: str, *, run_file: Path, redis_url: str | None, prefix: str, ray_address: str | None,
               s3_endpoint_url: str | None = None, s3_region: str | None = None, pause_timeout_s: float = 60.0,
               max_redis_pause_s: float = 30.0) -> dict:
    from .operate_cli import OperateError, settings_for

    dest = bk.location(to, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region)
    dest.check_writable()  # before attaching to Ray: a bad destination fails in a second
    try:
        settings = settings_for(run_file, redis_url, prefix, ray_address)
    except OperateError as exc:
        raise bk.BackupInputError(str(exc)) from None
    import ray

    from . import scaling

    try:
        try:
            cluster = scaling.attach(settings)
        except LookupError as exc:
            raise bk.BackupInputError(f"the cluster is not (fully) running: {exc}") from None
        except Exception as exc:  # Ray not there, auth refused...
            raise bk.BackupInputError(f"cannot attach to the cluster's Ray at {settings.ray_address}: {exc}") from None
        if not cluster.writers:
            raise bk.BackupInputError("the cluster has no writer: its events cannot be read")
        writer = cluster.writers[min(cluster.writers, key=lambda n: int(n.rpartition("-")[2] or 0))]

        def query(sql: str, parameters: dict | None) -> list:
            return ray.get(writer.query.remote(sql, parameters), timeout=600)

        def export(sql: str, parameters: dict | None, fmt: str) -> bytes:
            return ray.get(writer.export.remote(sql, parameters, fmt), timeout=600)

        manifest = bk.backup(dest, redis_url=settings.redis_url, prefix=settings.prefix, database=settings.database,
                             query=query, export=export, writers=list(cluster.writers),
                             pause_timeout_s=pause_timeout_s, max_redis_pause_s=max_redis_pause_s)
    finally:
        ray.shutdown()
    return summary(str(dest), manifest)


def summary(where: str, manifest: dict) -> dict:
    return {"backup": where, "created_at": manifest["created_at"], "prefix": manifest["prefix"],
            "database": manifest["database"], "redis_keys": manifest["redis"]["keys"],
            "events": manifest["events"], "clickhouse_events": manifest["clickhouse"]["events"],
            "outbox_events": manifest["outbox"]["events"], "files": len(manifest["files"]) + 1,
            "bytes": sum(f["bytes"] for f in manifest["files"].values()), "timings": manifest.get("timings")}


def run_restore(source: str, *, data_dir: Path, run_file_name: str, redis_url: str | None = None,
                clickhouse_url: str | None = None, wipe: bool = False, s3_endpoint_url: str | None = None,
                s3_region: str | None = None) -> dict:
    from storage.redis_server import RedisServerError, start_redis

    from .settings import ConfigError, Settings

    try:
        settings = Settings(data_dir=data_dir, redis_url=redis_url, clickhouse_url=clickhouse_url)
    except ConfigError as exc:
        raise bk.BackupInputError(str(exc)) from None
    src = bk.location(source, s3_endpoint_url=s3_endpoint_url, s3_region=s3_region)
    with bk.open_backup(src) as backup:  # every check of the backup before anything is touched
        running = _running_from(settings.data_dir / run_file_name)
        if running:
            raise bk.BackupInputError(f"peakdesk is running from {settings.data_dir} ({running}): stop it first, "
                                      "restore, then start it")
        server = None
        if redis_url is None:
            try:
                server = start_redis(settings.data_dir / "redis")
            except RedisServerError as exc:
                raise bk.BackupError(f"cannot start the data dir's Redis: {exc}") from None
        try:
            return bk.restore(backup, redis_url=server.url if server else redis_url,
                              clickhouse_dsn=settings.clickhouse_dsn, wipe=wipe)
        finally:
            if server is not None:
                server.stop()  # SIGTERM: the AOF is flushed; `peakdesk up` starts it again on the same files


def _running_from(run_file: Path) -> str:
    """'pid N' if `peakdesk up` runs from this data dir (its run file names a live process)."""
    try:
        pid = int(orjson.loads(run_file.read_bytes())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""  # left by a peakdesk that was killed
    except PermissionError:
        pass
    return f"pid {pid}, {run_file}"
