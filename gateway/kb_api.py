"""The bot's knowledge base over REST (`/api/v1/kb`): list, read, save and delete entries,
import and export them as JSON or CSV, and ask the bot a question to see what it would do.
Supervisors and up (and the merchant's systems, by API key) change it; everyone reads it."""
from __future__ import annotations

import asyncio

from quart import Blueprint, Response, request
from quart_schema import validate_request

from actors.bot.kb import Entry, KBError, from_csv, from_json, to_csv, to_json
from storage.knowledge import KnowledgeStore

from .auth import Principal
from .context import actor_of, authorized, services
from .errors import ApiError, check_path_id
from .permissions import Action
from .schemas import BotTry

kb_api = Blueprint("kb", __name__, url_prefix="/api/v1/kb")
TRY_TIMEOUT_S = 10.0


def _store() -> KnowledgeStore:
    records = services().records
    return KnowledgeStore(records.r, records.p, shard=records.shard)


@kb_api.get("")
@authorized(Action.KB_READ)
async def list_entries(who: Principal):
    store = _store()
    return {"items": await store.list(who.merchant), "version": await store.version(who.merchant)}


@kb_api.get("/<entry_id>")
@authorized(Action.KB_READ)
async def get_entry(entry_id: str, who: Principal):
    entry = await _store().get(who.merchant, entry_id)
    if entry is None:
        raise ApiError(404, "not_found", f"no knowledge-base entry {entry_id!r}")
    return entry


@kb_api.put("/<entry_id>")
@authorized(Action.KB_WRITE)
@validate_request(Entry)
async def save_entry(entry_id: str, data: Entry, who: Principal):
    check_path_id("id", data.id, entry_id)
    created = await _store().put(who.merchant, data.to_dict(), actor=actor_of(who))
    return data.to_dict(), 201 if created else 200


@kb_api.delete("/<entry_id>")
@authorized(Action.KB_WRITE)
async def delete_entry(entry_id: str, who: Principal):
    if not await _store().delete(who.merchant, entry_id, actor=actor_of(who)):
        raise ApiError(404, "not_found", f"no knowledge-base entry {entry_id!r}")
    return "", 204


@kb_api.post("/import")
@authorized(Action.KB_WRITE)
async def import_entries(who: Principal):
    """Body: a JSON list of entries (Content-Type application/json) or CSV (text/csv).
    `?mode=merge` (default: add and overwrite by id) or `?mode=replace` (the import becomes
    the whole knowledge base). All or nothing: one bad entry and nothing changes."""
    mode = request.args.get("mode", "merge")
    if mode not in ("merge", "replace"):
        raise ApiError(422, "invalid_field", f"mode: must be merge or replace, got {mode!r}", "mode")
    data = await request.get_data()
    kind = (request.mimetype or "").lower()
    try:
        if kind in ("text/csv", "application/csv"):
            entries = from_csv(data)
        elif kind == "application/json":
            entries = from_json(data)
        else:
            raise ApiError(415, "unsupported_media_type", "send application/json (a list of entries) or text/csv")
    except (KBError, UnicodeDecodeError) as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    return await _store().import_entries(who.merchant, [e.to_dict() for e in entries], replace=mode == "replace",
                                         actor=actor_of(who))


@kb_api.get("/export")
@authorized(Action.KB_READ)
async def export_entries(who: Principal):
    fmt = request.args.get("format", "json")
    entries = [Entry.model_validate(e) for e in await _store().list(who.merchant)]
    if fmt == "json":
        return Response(to_json(entries), content_type="application/json")
    if fmt == "csv":
        return Response(to_csv(entries).encode("utf-8-sig"), content_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="knowledge-base.csv"'})
    raise ApiError(422, "invalid_field", f"format: must be json or csv, got {fmt!r}", "format")


@kb_api.post("/try")
@authorized(Action.KB_READ)
@validate_request(BotTry)
async def try_bot(data: BotTry, who: Principal):
    """What the bot would do with a message (and earlier messages, for a follow-up): its
    decision, candidates and scores. Runs on a bot worker, like a real conversation."""
    ask = services().ask_bot
    if ask is None:
        raise ApiError(503, "unavailable", "this gateway has no bot workers to ask")
    try:
        return await asyncio.wait_for(ask(who.merchant, data.text, list(data.context)), TRY_TIMEOUT_S)
    except (LookupError, asyncio.TimeoutError) as exc:
        raise ApiError(503, "unavailable", f"no bot worker answered: {type(exc).__name__}: {exc}") from None
