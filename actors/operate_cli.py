"""What `peakdesk scale / drain / rebalance / restart / start` do once their flags are parsed:
attach to the running cluster (its Ray address and settings come from `peakdesk up`'s run file
or from Redis), change it, and say what changed."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson

from .settings import Settings


class OperateError(RuntimeError):
    """The cluster could not be found or changed; the message says why."""


def settings_for(run_file: Path, redis_url: str | None, prefix: str, ray_address: str | None) -> Settings:
    """The running cluster's settings (as its start recorded them), joined to this process's
    secrets from the environment."""
    from .scaling import settings_from_redis

    info = {}
    if redis_url is None:
        if not run_file.exists():
            raise OperateError(f"no running peakdesk found ({run_file} is missing); pass --redis-url and --ray-address")
        info = orjson.loads(run_file.read_bytes())
        redis_url, prefix = info["redis_url"], info["prefix"]
    stored = settings_from_redis(redis_url, prefix)
    if stored is None:
        raise OperateError(f"no peakdesk cluster recorded in {redis_url} under prefix {prefix!r}")
    address = ray_address or info.get("ray_address") or stored.get("ray_address")
    if not address:
        raise OperateError("the cluster's Ray address is unknown: pass --ray-address HOST:PORT")
    return Settings(**{**stored, "redis_url": redis_url, "prefix": prefix, "ray_address": address,
                       **_secrets()})


def _secrets() -> dict:
    env = {"s3_access_key_id": "AWS_ACCESS_KEY_ID", "s3_secret_access_key": "AWS_SECRET_ACCESS_KEY",
           "s3_session_token": "AWS_SESSION_TOKEN", "llm_api_key": "PEAKDESK_LLM_API_KEY"}
    return {k: os.environ[v] for k, v in env.items() if os.environ.get(v)}


def ray_start(args: list[str]) -> None:
    """`ray start ...` (the Ray that ships with peakdesk's environment)."""
    exe = shutil.which("ray") or str(Path(os.__file__).parent.parent.parent / "bin" / "ray")
    done = subprocess.run([exe, "start", "--disable-usage-stats", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OperateError(f"ray start failed: {(done.stderr or done.stdout).strip()[-800:]}")


def join(address: str, namespace: str, hosts: int | None, gateway: bool) -> dict:
    """This machine joins the Ray cluster at `address` and gets peakdesk hosts (and a gateway)
    of its own, pinned to it; they outlive this command."""
    import ray

    from . import scaling

    ray_start(["--address", address])
    ray.init(address=address, namespace=namespace, logging_level="WARNING")
    try:
        stored = scaling.settings_from_ray(namespace)
        if stored is None:
            raise OperateError(f"no peakdesk cluster in Ray namespace {namespace!r} at {address}"
                               " (start one with `peakdesk start --head`)")
        settings = Settings(**{**stored, "ray_address": address, **_secrets()})
        c = scaling.attach(settings)
        node = ray.get_runtime_context().get_node_id()
        added = scaling.add_hosts(c, hosts or os.cpu_count() or 1, node=node, detached=True)
        out = {"node": node, "hosts_added": added}
        if gateway:
            out.update(scaling.add_gateway(c, node=node, detached=True))
        return out
    finally:
        ray.shutdown()
