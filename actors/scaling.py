"""Changing a running cluster without dropping a conversation: more or fewer actor hosts,
gateways and bot workers; a Ray node drained before it leaves; activations evened out; a rolling
restart. Used by `peakdesk scale / drain / rebalance / restart` (from any shell: they attach to
the running Ray cluster) and by the tests.

The cluster's shape — which hosts, gateways and bot workers exist — is kept in Redis
(`{p}cluster`), so any process can see and change it; the placement table says which hosts
take activations.

Removing a host, in order: mark it draining (it takes no new activations and forwards what it
still receives), move its activations (each wakes on its new host with its state and timers),
publish a table without it, wait until every router has switched (hosts and gateways reload
the table every heartbeat; a router switches only once its channels are idle), wait until
nothing it committed is still on its way, then stop it.
"""
from __future__ import annotations

import logging
import time

import orjson
import ray

from . import remote
from .cluster import Cluster, init_ray
from .placement import PlacementTable
from .settings import Settings

log = logging.getLogger(__name__)
SWITCH_GRACE_S = 6.0     # > two heartbeats (2 s): every host and gateway has reloaded the table


def shape(c: Cluster) -> dict:
    raw = c.redis.get(f"{c.settings.prefix}cluster")
    return orjson.loads(raw) if raw else {}


def save_shape(c: Cluster) -> None:
    c.redis.set(f"{c.settings.prefix}cluster", orjson.dumps({
        "hosts": sorted(c.hosts, key=_index), "gateways": sorted(c.gateways, key=_index),
        "bots": len(c.bots), "writers": len(c.writers)}))


SECRET_FIELDS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token", "llm_api_key")
KV_KEY = b"peakdesk:settings"


def save_settings(c: Cluster) -> None:
    """The cluster's settings, for commands that join it later (`peakdesk scale`, `peakdesk
    start --address`): in Redis, and in Ray's own key-value store (a joining node knows only the
    Ray address). Secrets stay out: those commands take them from their environment."""
    from ray.experimental import internal_kv

    public = {k: v for k, v in c.settings.to_dict().items() if k not in SECRET_FIELDS}
    public["clickhouse_url"] = _without_password(public.get("clickhouse_url"))  # joiners never open ClickHouse
    c.redis.set(f"{c.settings.prefix}settings", orjson.dumps(public))
    try:
        internal_kv._internal_kv_put(KV_KEY + c.settings.namespace.encode(), orjson.dumps(public), overwrite=True)
    except Exception:  # not fatal: `peakdesk start --address` then needs --redis-url
        log.warning("could not store the settings in Ray's key-value store", exc_info=True)


def _without_password(url: str | None) -> str | None:
    from urllib.parse import urlparse

    if not url:
        return url
    u = urlparse(url)
    if not u.password:
        return url
    user = f"{u.username}@" if u.username else ""
    return u._replace(netloc=f"{user}{u.hostname}" + (f":{u.port}" if u.port else "")).geturl()


def settings_from_ray(namespace: str) -> dict | None:
    from ray.experimental import internal_kv

    raw = internal_kv._internal_kv_get(KV_KEY + namespace.encode())
    return orjson.loads(raw) if raw else None


def settings_from_redis(redis_url: str, prefix: str) -> dict | None:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        raw = client.get(f"{prefix}settings")
    finally:
        client.close()
    return orjson.loads(raw) if raw else None


def attach(settings: Settings) -> Cluster:
    """A Cluster object for a running cluster (another process started it): handles by name."""
    init_ray(settings)
    c = Cluster(settings)
    table, known = c.table(), shape(c)
    hosts = set(known.get("hosts", [])) | set(table.hosts if table else ())
    for name in sorted(hosts, key=_index):
        c.hosts[name] = _actor(name, settings.namespace)
    for name in known.get("gateways", []):
        c.gateways[name] = _actor(name, settings.namespace)
    for i in range(int(known.get("writers", settings.writers))):
        c.writers[f"writer-{i}"] = _actor(f"writer-{i}", settings.namespace)
    for i in range(int(known.get("bots", 0))):
        c.bots[f"bot-{i}"] = _actor(f"bot-{i}", settings.namespace)
    return c


def _actor(name: str, namespace: str):
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise LookupError(f"{name} is not running in Ray namespace {namespace!r}") from None


def _index(name: str) -> int:
    tail = name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


def alive_nodes() -> list[str]:
    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def host_nodes(c: Cluster) -> dict[str, str]:
    names = list(c.hosts)
    return dict(zip(names, ray.get([c.hosts[n].node_id.remote() for n in names], timeout=30)))


# -- hosts ----------------------------------------------------------------------------------------
def add_hosts(c: Cluster, n: int, node: str | None = None, detached: bool = False, timeout: float = 60) -> list[str]:
    """Start `n` hosts — on `node`, or round robin over the alive nodes, the least used first —
    and publish a table with them: new conversations use them at once."""
    if n <= 0:
        return []
    used = host_nodes(c)
    counts = {nid: sum(1 for v in used.values() if v == nid) for nid in alive_nodes()}
    start = max([_index(h) for h in c.hosts] + [-1]) + 1
    new = []
    for i in range(start, start + n):
        target = node or min(counts, key=lambda nid: (counts[nid], nid))
        counts[target] = counts.get(target, 0) + 1
        hid = f"host-{i}"
        c.hosts[hid] = remote.host_actor(hid, i, c.settings.to_dict(), c.settings.namespace, node=target,
                                         detached=detached)
        new.append(hid)
    ray.get([c.hosts[h].wait_ready.remote() for h in new], timeout=timeout)
    table = c.table()
    hosts = [*(table.hosts if table else ()), *new]
    c.publish(PlacementTable((table.version if table else 0) + 1, tuple(hosts), table.draining if table else ()))
    save_shape(c)
    log.info("added hosts %s", new)
    return new


def remove_hosts(c: Cluster, ids: list[str], timeout: float = 120) -> int:
    """Drain `ids`, take them out of the table, stop them; returns the activations moved."""
    table = c.table()
    missing = [h for h in ids if h not in c.hosts or table is None or h not in table.hosts]
    if missing:
        raise LookupError(f"no such host(s) in the placement table: {', '.join(missing)}")
    if table is None or not set(table.hosts) - set(ids):
        raise ValueError("can't remove every host: conversations need at least one")
    draining = PlacementTable(table.version + 1, table.hosts, tuple(sorted({*table.draining, *ids})))
    c.publish(draining)
    moved = sum(ray.get([c.hosts[h].drain.remote() for h in ids], timeout=timeout))
    rest = tuple(h for h in draining.hosts if h not in ids)
    c.publish(PlacementTable(draining.version + 1, rest, tuple(h for h in draining.draining if h not in ids)))
    time.sleep(SWITCH_GRACE_S)   # the removed hosts still forward stragglers meanwhile
    ray.get([c.hosts[h].quiet.remote() for h in ids], timeout=timeout)
    ray.get([c.hosts[h].stop.remote() for h in ids], timeout=timeout)
    for h in ids:
        ray.kill(c.hosts.pop(h), no_restart=True)
    save_shape(c)
    log.info("removed hosts %s (%d activations moved)", ids, moved)
    return moved


def rebalance(c: Cluster, timeout: float = 120) -> int:
    """Every host hands over the activations the table places elsewhere; returns how many."""
    return sum(ray.get([h.rebalance.remote() for h in c.hosts.values()], timeout=timeout))


def drain_node(c: Cluster, node: str, timeout: float = 120) -> dict:
    """Before a Ray node leaves: its hosts' activations move to hosts on other nodes, then the
    hosts stop; returns what happened. Gateways and bot workers on it are moved by restarting
    them elsewhere (clients reconnect and resume)."""
    on_node = [h for h, nid in host_nodes(c).items() if nid == node]
    if not on_node:
        raise LookupError(f"no peakdesk host on node {node}")
    moved = remove_hosts(c, on_node, timeout)
    return {"node": node, "hosts_removed": on_node, "activations_moved": moved}


# -- gateways and bot workers -------------------------------------------------------------------
def scale(c: Cluster, hosts: int | None = None, gateways: int | None = None, bot_workers: int | None = None,
          detached: bool = False) -> dict:
    out: dict = {}
    if hosts is not None:
        if hosts < 1:
            raise ValueError("hosts: at least 1")
        current = sorted(c.hosts, key=_index)
        if hosts > len(current):
            out["hosts_added"] = add_hosts(c, hosts - len(current), detached=detached)
        elif hosts < len(current):
            victims = current[hosts:]
            out["hosts_removed"], out["activations_moved"] = victims, remove_hosts(c, victims)
    if gateways is not None:
        out.update(_scale_gateways(c, gateways, detached))
    if bot_workers is not None:
        out.update(_scale_bots(c, bot_workers, detached))
    save_shape(c)
    return out


def _scale_gateways(c: Cluster, n: int, detached: bool) -> dict:
    if n < 1:
        raise ValueError("gateways: at least 1")
    current = sorted(c.gateways, key=_index)
    added, removed = [], current[n:]
    for i in range(len(current), n):
        name = f"gateway-{i}"
        port = c.settings.port + i if c.settings.port else 0
        settings = {**c.settings.to_dict(), "port": port}
        c.gateways[name] = remote.gateway_actor(name, settings, c.settings.namespace, detached=detached)
        added.append(name)
    ray.get([c.gateways[g].wait_ready.remote() for g in added], timeout=60)
    for name in removed:  # clients are told to reconnect (to another gateway, behind the load balancer)
        handle = c.gateways.pop(name)
        try:
            ray.get(handle.say_goodbye.remote("gateway removed"), timeout=10)
        finally:
            ray.kill(handle, no_restart=True)
    return {"gateways_added": added, "gateways_removed": removed}


def add_gateway(c: Cluster, node: str | None = None, detached: bool = False) -> dict:
    """One more gateway (on `node`): behind the load balancer, clients may use any."""
    i = max([_index(g) for g in c.gateways] + [-1]) + 1
    name = f"gateway-{i}"
    port = c.settings.port + i if c.settings.port and node is None else c.settings.port
    c.gateways[name] = remote.gateway_actor(name, {**c.settings.to_dict(), "port": port}, c.settings.namespace,
                                            node=node, detached=detached)
    bound = ray.get(c.gateways[name].wait_ready.remote(), timeout=60)
    save_shape(c)
    return {"gateway_added": name, "port": bound}


def _scale_bots(c: Cluster, n: int, detached: bool) -> dict:
    if n < 0:
        raise ValueError("bot_workers: 0 or more")
    current = sorted(c.bots, key=_index)
    added = []
    for i in range(len(current), n):
        name = f"bot-{i}"
        c.bots[name] = remote.bot_actor(name, c.settings.to_dict(), c.settings.namespace, detached=detached)
        added.append(name)
    ray.get([c.bots[b].wait_ready.remote() for b in added], timeout=120)
    removed = current[n:]
    save_shape(c)   # hosts read the pool's size from here (every heartbeat) before the old ones go
    if removed:
        time.sleep(SWITCH_GRACE_S)
    for name in removed:
        ray.kill(c.bots.pop(name), no_restart=True)
    return {"bots_added": added, "bots_removed": removed}


# -- restarts -------------------------------------------------------------------------------------
def restart_rolling(c: Cluster, gateways: bool = True, hosts: bool = True, others: bool = True,
                    timeout: float = 120) -> dict:
    """One at a time: a gateway says goodbye (its clients reconnect and resume) and restarts;
    a host restarts (its state is in Redis; senders re-send what it had not acknowledged, and
    it re-sends what it had committed but not delivered); then writers (the outbox keeps what
    they had not written) and bot workers (a question meanwhile waits or hands over). Each is
    ready before the next goes."""
    done = []
    if gateways:
        for name, handle in sorted(c.gateways.items(), key=lambda kv: _index(kv[0])):
            try:
                ray.get(handle.say_goodbye.remote("rolling restart"), timeout=10)
            except Exception:  # restarting anyway
                log.warning("%s did not say goodbye", name)
            ray.kill(handle, no_restart=False)
            _wait_restarted(handle, timeout)
            done.append(name)
    roles = ([c.hosts] if hosts else []) + ([c.writers, c.bots] if others else [])
    for actors in roles:
        for name, handle in sorted(actors.items(), key=lambda kv: _index(kv[0])):
            ray.kill(handle, no_restart=False)
            _wait_restarted(handle, timeout)
            done.append(name)
    return {"restarted": done}


def _wait_restarted(handle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.get(handle.wait_ready.remote(), timeout=max(1.0, deadline - time.monotonic()))
            return
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
