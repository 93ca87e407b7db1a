"""`peakdesk`: start the system, inspect it, benchmark it.

    peakdesk up        start everything on this machine (or join services given by URL)
    peakdesk status    hosts, activations, outbox backlog, presence — from any shell
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from pathlib import Path

import click
import orjson

from actors.settings import ConfigError, Settings, default_data_dir

RUN_FILE = "run.json"  # written by `up` under the data dir: how other shells find the system


def _settings(**kwargs) -> Settings:
    try:
        return Settings(**{k: v for k, v in kwargs.items() if v is not None})
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@click.group()
def main() -> None:
    """peakdesk — customer-service messaging for promotion peaks."""


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where Redis, chDB and run files live [./peakdesk-data or $PEAKDESK_DATA_DIR].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Gateway listen address.")
@click.option("--port", type=int, default=8080, show_default=True, help="Gateway listen port.")
@click.option("--redis-url", default=None, help="Use this Redis instead of starting one.")
@click.option("--clickhouse-url", default=None, help="ClickHouse HTTP URL instead of embedded chDB.")
@click.option("--ray-address", default=None, help="Join this Ray cluster instead of starting one.")
@click.option("--hosts", type=int, default=None, help="Actor hosts [CPU count].")
@click.option("--writers", type=int, default=None, help="Outbox writers [1].")
def up(data_dir, host, port, redis_url, clickhouse_url, ray_address, hosts, writers) -> None:
    """Start peakdesk; Ctrl-C (or SIGTERM) stops everything it started."""
    settings = _settings(data_dir=data_dir, host=host, port=port, redis_url=redis_url,
                         clickhouse_url=clickhouse_url, ray_address=ray_address, hosts=hosts, writers=writers)
    from actors.launcher import run_until_signalled

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sys.exit(run_until_signalled(settings, stop, RUN_FILE))


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The data dir of a running `peakdesk up`.")
@click.option("--redis-url", default=None, help="Read the cluster's state from this Redis.")
@click.option("--prefix", default="pd:", show_default=True, help="Key prefix of the cluster.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(data_dir, redis_url, prefix, as_json) -> None:
    """Hosts, activations, mailboxes, outbox backlog and presence counts."""
    from actors.status import collect, render

    if redis_url is None:
        run_file = (data_dir or default_data_dir()) / RUN_FILE
        if not run_file.exists():
            raise click.UsageError(f"no running peakdesk found ({run_file} is missing); pass --redis-url")
        info = orjson.loads(run_file.read_bytes())
        redis_url, prefix = info["redis_url"], info["prefix"]
    report = asyncio.run(collect(redis_url, prefix))
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render(report))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
