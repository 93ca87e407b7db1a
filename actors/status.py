"""`peakdesk status`: the cluster's state, read from Redis only — so it works from any shell,
while Ray is busy, and shows hosts that stopped answering (their heartbeat expired)."""
from __future__ import annotations

import orjson
import redis.asyncio as aioredis

from storage import outbox
from storage.presence import Presence


async def collect(redis_url: str, prefix: str) -> dict:
    r = aioredis.from_url(redis_url)
    try:
        presence = Presence(r, prefix)
        raw = await r.get(f"{prefix}placement")
        table = orjson.loads(raw) if raw else {"version": 0, "hosts": [], "draining": []}
        beats = await presence.heartbeats("host")
        hosts = []
        for hid in sorted(set(table["hosts"]) | set(beats), key=_natural):
            stats = beats.get(hid)
            state = "down" if stats is None else ("draining" if hid in table["draining"] else "up")
            hosts.append({"host": hid, "state": state, **(stats or {})})
        shape = orjson.loads(await r.get(f"{prefix}cluster") or b"{}")
        return {
            "placement_version": table["version"],
            "hosts": hosts,
            "nodes": sorted({h.get("node") for h in hosts if h.get("node")}),
            "bot_workers": shape.get("bots", 0),
            "writers": await presence.heartbeats("writer"),
            "gateways": await presence.heartbeats("gateway"),
            "outbox": await outbox.backlog(r, prefix),
            "presence": await presence.summary(),
        }
    finally:
        await r.aclose()


def _natural(host_id: str) -> tuple:
    head, _, tail = host_id.rpartition("-")
    return (head, int(tail)) if tail.isdigit() else (host_id, 0)


def render(report: dict) -> str:
    lines = [f"placement table v{report['placement_version']}; {len(report.get('nodes', []))} Ray node(s);"
             f" {report.get('bot_workers', 0)} bot worker(s)", "",
             f"{'HOST':<12}{'STATE':<10}{'NODE':<10}{'ACTIVATIONS':>12}{'MAILBOX':>9}{'OUTGOING':>10}{'HANDLED':>10}"]
    for h in report["hosts"]:
        node = (h.get("node") or "-")[:8]
        lines.append(f"{h['host']:<12}{h['state']:<10}{node:<10}{h.get('activations', '-'):>12}{h.get('mailbox', '-'):>9}"
                     f"{h.get('outgoing', '-'):>10}{h.get('handled', '-'):>10}")
    out = report["outbox"]
    lines += ["", f"outbox backlog: {out['events']} events waiting for ClickHouse"
                  f" ({sum(out['entries'].values())} stream entries, {sum(out['pending'].values())} being written)",
              "", f"{'WRITER':<12}{'STATE':<10}{'WRITTEN':>10}{'RETRIES':>9}  LAST ERROR"]
    for name, w in sorted(report["writers"].items()):
        lines.append(f"{name:<12}{w.get('state', '?'):<10}{w.get('events_written', 0):>10}{w.get('retries', 0):>9}"
                     f"  {w.get('last_error') or '-'}")
    lines += ["", f"{'GATEWAY':<12}{'ADDRESS':<24}CONNECTIONS"]
    lines += [f"{name:<12}{g.get('address', '?'):<24}{g.get('connections', '-')}"
              for name, g in sorted(report["gateways"].items())]
    p = report["presence"]
    agents = ", ".join(f"{n} {s}" for s, n in p["agents"].items())
    lines += ["", f"presence: {p['merchants']} merchants; agents {agents}; {p['customers_online']} customers online"]
    return "\n".join(lines)
