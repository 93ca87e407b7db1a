"""`ray.remote` is applied here and nowhere else: names, namespaces and options per role.

Every role asks for num_cpus=0: they are I/O-bound event loops, and Ray's CPU accounting
would otherwise let a 2-core node hold only two of them. Hosts, writers and gateways restart
forever after a crash (state comes back from Redis; an in-flight call fails and its sender
re-sends it), and no Ray task retries are used: they would re-run calls blindly.
"""
from __future__ import annotations

import ray

from .settings import Settings

# Async actors run up to this many calls at once; one per sending channel is all we need,
# the rest is head-room for status and health calls.
MAX_CONCURRENCY = 1000


def _options(name: str, namespace: str, node: str | None = None, detached: bool = False) -> dict:
    """`node`: pin to that Ray node (a host placed by `peakdesk scale`/`start`); `detached`: the
    actor outlives the process that created it (a CLI command joining a running cluster)."""
    options = {"name": name, "namespace": namespace, "num_cpus": 0, "max_restarts": -1,
               "max_task_retries": 0, "max_concurrency": MAX_CONCURRENCY,
               "lifetime": "detached" if detached else None}
    if node:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node, soft=False)
    return options


def host_actor(host_id: str, index: int, settings: dict, namespace: str, node: str | None = None,
               detached: bool = False):
    from .host_service import HostService

    return ray.remote(HostService).options(**_options(host_id, namespace, node, detached)).remote(host_id, index,
                                                                                                  settings)


def writer_actor(name: str, index: int, settings: Settings, node: str | None = None):
    from storage.writer_service import WriterService

    return ray.remote(WriterService).options(**_options(name, settings.namespace, node)).remote(
        name, settings.redis_url, settings.clickhouse_dsn, settings.database,
        settings.shards_of_writer(index), settings.prefix)


def gateway_actor(name: str, settings: dict, namespace: str, node: str | None = None, detached: bool = False):
    from gateway.service import GatewayService

    return ray.remote(GatewayService).options(**_options(name, namespace, node, detached)).remote(name, settings)


def bot_actor(name: str, settings: dict, namespace: str, detached: bool = False):
    """A bot worker: CPU-bound and synchronous (one batch at a time), so it asks Ray for a CPU
    — the pool can't oversubscribe a node's cores — and gets no concurrency beyond one."""
    from .bot.worker import BotWorker

    options = {**_options(name, namespace, detached=detached), "num_cpus": 1, "max_concurrency": 1}
    return ray.remote(BotWorker).options(**options).remote(name, settings)
