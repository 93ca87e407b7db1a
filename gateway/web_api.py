"""The web pages (agent console, supervisor live view, the embeddable customer widget) and the
two small APIs only they need: a merchant's public widget theme, and the live picture of agents
and queues for supervisors. The pages are static files in `web/`, no build step; they speak
docs/protocol.md like any other client."""
from __future__ import annotations

import html
import re
import time
from pathlib import Path

import orjson

from quart import Blueprint, Response, request, send_file

from storage import crypto
from storage.actor_store import read_states
from storage.commerce.base import ID as PRODUCT_ID
from storage.knowledge import KnowledgeStore
from storage.records import NotFound

from .auth import Principal
from .context import authorized, services
from .errors import ApiError
from .live import recent, snapshot
from .permissions import Action, is_lead
from .ws_actions import bot_welcome

WEB = Path(__file__).resolve().parent.parent / "web"
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_PRODUCT = re.compile(PRODUCT_ID)
ASSETS = {"console.js", "supervisor.js", "common.js", "app.css", "widget.js", "commerce.js", "tickets.js"}

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
    """A page with the one-line embed, to try the widget (and for the browser tests).
    `product=ID` plays a product page (`data-product`); `customer_id`, `ts` and `signature`
    play a shop whose server signed its logged-in customer in (docs/widget-identity.md) — they
    are only passed on to the widget, which exchanges them; nothing is signed here."""
    args = request.args
    merchant, group, product = args.get("merchant", "demo"), args.get("group", ""), args.get("product", "")
    for name, value in (("merchant", merchant), ("group", group)):
        if value and not _ID.match(value):
            raise ApiError(422, "invalid_field", f"{name}: lowercase letters, digits, - and _ only", name)
    if product and not _PRODUCT.match(product):
        raise ApiError(422, "invalid_field", "product: a product id (letters, digits, _ . : -)", "product")
    attrs = {"merchant": merchant, "group": group, "product": product}
    identity = {k: args.get(k, "") for k in ("customer_id", "ts", "signature")}
    if any(identity.values()):
        if not all(identity.values()):
            missing = next(k for k, v in identity.items() if not v)
            raise ApiError(422, "invalid_field", f"{missing}: a signed customer needs customer_id, ts and signature",
                           missing)
        if not identity["ts"].isdigit() or len(identity["ts"]) > 12:
            raise ApiError(422, "invalid_field", "ts: Unix seconds", "ts")
        if len(identity["customer_id"]) > 128 or len(identity["signature"]) > 128:
            raise ApiError(422, "invalid_field", "customer_id, signature: at most 128 characters", "customer_id")
        attrs.update({"customer-id": identity["customer_id"], "ts": identity["ts"], "signature": identity["signature"]})
    data = "".join(f' data-{k}="{html.escape(v, quote=True)}"' for k, v in attrs.items() if v)
    page = (f'<p>Product 商品: <b>{html.escape(product)}</b></p>' if product else "")
    body = (f'<!doctype html><html lang="zh"><head><meta charset="utf-8"><title>Shop · 店铺</title></head>'
            f'<body><h1>Demo shop 演示店铺</h1>{page}<p>Chat with us at the bottom right. 右下角联系客服。</p>'
            f'<script src="/widget.js"{data} defer></script></body></html>')
    return Response(body, content_type="text/html; charset=utf-8")


@web_api.get("/api/v1/widget/<merchant>")
async def widget_settings(merchant: str):
    """Public: what the widget shows before anyone logs in (theme, nickname, welcome), and
    whether the merchant's bot greets new conversations (then the widget opens one at once)."""
    try:
        m = await services().records.get_merchant(merchant)
    except NotFound:
        raise ApiError(404, "not_found", f"no merchant {merchant}") from None
    settings = m.get("settings") or {}
    svc = services()
    bot = (svc.ask_bot is not None and bot_welcome(settings.get("bot") or {}) is not None
           and await KnowledgeStore(svc.records.r, svc.records.p).count(merchant) > 0)
    return {"merchant": merchant, "name": m.get("name", ""), "theme": settings.get("theme") or {},
            "welcome_message": settings.get("welcome_message") or "", "bot": bot}


@web_api.get("/api/v1/live")
@authorized(Action.CONVERSATION_VIEW_ALL)
async def live(who: Principal):
    """Agents with status and load, each group's queue (length, longest wait, VIP and flagged
    customers), totals, and the last minutes from ClickHouse (gateway/live.py). The same
    picture is pushed every 2 s to supervisors who send `{"t": "monitor", "on": true}`."""
    svc = services()
    numbers = (await recent(svc.query, [who.merchant]))[who.merchant]
    return await snapshot(svc.records, who.merchant, numbers)


@web_api.get("/api/v1/customers/<customer_id>/conversations")
@authorized(Action.CUSTOMER_READ)
async def customer_conversations(customer_id: str, who: Principal):
    """The customer's past conversations, newest first, from ClickHouse (every event lands there)."""
    query = services().query
    if query is None:
        raise ApiError(503, "unavailable", "no ClickHouse writer is reachable from this gateway")
    if not customer_id or len(customer_id) > 128 or not customer_id.isprintable():
        raise ApiError(422, "invalid_field", "customer_id: 1-128 printable characters", "customer_id")
    rows = await query(
        "SELECT session_id, min(ts), max(ts), countIf(type = 'message.sent'), anyIf(agent_id, type = 'session.assigned'),"
        " anyIf(JSONExtractInt(payload, 'score'), type = 'csat.rated'), any(group_id) FROM events"
        " WHERE merchant_id = {m:String} AND customer_id = {c:String} AND session_id != ''"
        " GROUP BY session_id ORDER BY min(ts) DESC LIMIT 20", {"m": who.merchant, "c": customer_id})
    return {"items": [{"session_id": s, "started": str(a), "last": str(b), "messages": int(n), "agent_id": ag,
                       "csat": int(score) or None, "group_id": g} for s, a, b, n, ag, score, g in rows]}


@web_api.get("/api/v1/conversations/<session_id>/entry")
@authorized(Action.CUSTOMER_READ)
async def conversation_entry(session_id: str, who: Principal):
    """Where a conversation started — the widget's `open` entry (page, product_id, ...), issue
    type, customer and group — from its `session.created` event in ClickHouse, for the console's
    side panel (the product the customer asked about). 404 until the event has landed (a
    second or so after the conversation opened)."""
    query = services().query
    if query is None:
        raise ApiError(503, "unavailable", "no ClickHouse writer is reachable from this gateway")
    if not _ID.match(session_id):
        raise ApiError(422, "invalid_field", "session_id: a session id (lowercase letters, digits, - and _)",
                       "session_id")
    rows = await query(
        "SELECT customer_id, group_id, payload, ts FROM events WHERE merchant_id = {m:String}"
        " AND session_id = {s:String} AND type = 'session.created' ORDER BY ts LIMIT 1",
        {"m": who.merchant, "s": session_id})
    if not rows:
        raise ApiError(404, "not_found", f"no conversation {session_id} (yet)")
    customer_id, group_id, payload, ts = rows[0]
    try:
        data = orjson.loads(payload or "{}")
    except orjson.JSONDecodeError:
        data = {}
    data = crypto.keyring(services().records.r, services().records.p).open_payload(who.merchant, data)
    entry = data.get("entry") if isinstance(data.get("entry"), dict) else {}
    return {"session_id": session_id, "customer_id": customer_id, "group_id": group_id, "started": str(ts),
            "entry": entry, "issue_type": data.get("issue_type") or ""}


@web_api.get("/api/v1/queues/<group_id>")
@authorized(Action.CONVERSATION_ACCEPT)
async def queue_of(group_id: str, who: Principal):
    """Who waits in a group's queue (from its actor's snapshot), for manual picking: members of
    the group and supervisors and up."""
    records = services().records
    try:
        await records.get_group(who.merchant, group_id)
        me = await records.get_agent(who.merchant, who.id) if who.kind == "agent" else {}
    except NotFound:
        raise ApiError(404, "not_found", f"no group {group_id}") from None
    if group_id not in me.get("groups", []) and not is_lead(who.role):
        raise ApiError(403, "forbidden", f"you are not in group {group_id}")
    state, = await read_states(records.r, records.p, "queue", who.merchant, [group_id])
    waiting = (state or {}).get("waiting", [])
    now = time.time()
    order = sorted(waiting, key=lambda w: (-w["priority"], w["arrival"]))
    return {"items": [{"session_id": w["session"], "customer_id": w["customer"], "priority": w["priority"],
                       "position": i, "waiting_s": round(now - w["since"], 1)} for i, w in enumerate(order, 1)]}
