"""The web pages (agent console, supervisor live view, the embeddable customer widget) and the
two small APIs only they need: a merchant's public widget theme, and the live picture of agents
and queues for supervisors. The pages are static files in `web/`, no build step; they speak
docs/protocol.md like any other client."""
from __future__ import annotations

import time
from pathlib import Path

import msgpack
from quart import Blueprint, Response, request, send_file

from storage.presence import Presence
from storage.records import NotFound

from .auth import Principal
from .context import authorized, services
from .errors import ApiError
from .permissions import Action

WEB = Path(__file__).resolve().parent.parent / "web"
ASSETS = {"console.js", "supervisor.js", "common.js", "app.css", "widget.js"}

web_api = Blueprint("web", __name__)


async def _file(name: str) -> Response:
    response = await send_file(WEB / name)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@web_api.get("/console")
async def console() -> Response:
    return await _file("console.html")


@web_api.get("/supervisor")
async def supervisor() -> Response:
    return await _file("supervisor.html")


@web_api.get("/widget.js")
async def widget() -> Response:
    return await _file("widget.js")


@web_api.get("/web/<name>")
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, "not_found", f"no asset {name}")
    return await _file(name)


@web_api.get("/widget-demo")
async def widget_demo() -> Response:
    """A page with the one-line embed, to try the widget (and for the browser tests)."""
    merchant = request.args.get("merchant", "demo")
    if not merchant.replace("-", "").replace("_", "").isalnum():
        raise ApiError(422, "invalid_field", "merchant: letters, digits, - and _ only", "merchant")
    html = (f'<!doctype html><html lang="zh"><head><meta charset="utf-8"><title>Shop · 店铺</title></head>'
            f'<body><h1>Demo shop 演示店铺</h1><p>Chat with us at the bottom right. 右下角联系客服。</p>'
            f'<script src="/widget.js" data-merchant="{merchant}" defer></script></body></html>')
    return Response(html, content_type="text/html; charset=utf-8")


@web_api.get("/api/v1/widget/<merchant>")
async def widget_settings(merchant: str):
    """Public: what the widget shows before anyone logs in (theme, nickname, welcome)."""
    try:
        m = await services().records.get_merchant(merchant)
    except NotFound:
        raise ApiError(404, "not_found", f"no merchant {merchant}") from None
    settings = m.get("settings") or {}
    return {"merchant": merchant, "name": m.get("name", ""), "theme": settings.get("theme") or {},
            "welcome_message": settings.get("welcome_message") or ""}


@web_api.get("/api/v1/live")
@authorized(Action.CONVERSATION_VIEW_ALL)
async def live(who: Principal):
    """Agents with status and load (presence) and each group's queue (length, longest wait)."""
    records = services().records
    presence = Presence(records.r, records.p)
    online = {a["agent_id"]: a for a in await presence.agents(who.merchant)}
    agents = [{"agent_id": a["agent_id"], "name": a["name"], "groups": a.get("groups", []),
               **{k: online.get(a["agent_id"], {}).get(k) for k in ("status", "capacity", "load")}}
              for a in await records.list_agents(who.merchant)]
    for a in agents:
        a["status"] = a["status"] or "offline"
    groups = await records.list_groups(who.merchant)
    keys = [f"{records.p}m:{who.merchant}:snap:queue:{g['group_id']}" for g in groups]
    snaps = await records.r.mget(keys) if keys else []
    now, queues = time.time(), []
    for g, raw in zip(groups, snaps):
        waiting = msgpack.unpackb(raw)[0].get("waiting", []) if raw else []
        queues.append({"group_id": g["group_id"], "name": g["name"], "waiting": len(waiting),
                       "longest_wait_s": round(max((now - w["since"] for w in waiting), default=0.0), 1)})
    return {"agents": agents, "queues": queues}
