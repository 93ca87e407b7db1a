"""The SLA sweeper: acts on ticket deadlines as they fall due — a reminder before, escalation
when breached. Every gateway runs one; deadlines live in one sorted set across merchants
(`{p}tickets:due`) and acting on one is idempotent (storage.tickets.store.apply_deadline), so
two sweepers never remind twice and a sweeper that dies mid-way loses nothing."""
from __future__ import annotations

import asyncio
import logging

from storage.records import NotFound

from .config import ticket_settings
from .store import TicketStore, due_key

log = logging.getLogger(__name__)


async def sweep(store: TicketStore, records, limit: int = 200) -> int:
    """Act on every deadline due now (at most `limit`); how many changed a ticket."""
    now = store._now()
    due = await store.r.zrangebyscore(due_key(store.p), "-inf", now, start=0, num=limit)
    acted = 0
    for raw in due:
        merchant, ticket_id, kind = raw.decode().split("|")
        try:
            config = ticket_settings(await records.get_merchant(merchant))
        except NotFound:   # the merchant is gone: its deadlines with it
            await store.r.zrem(due_key(store.p), raw)
            continue
        except ValueError as exc:   # settings that no longer validate: the others go on
            log.warning("tickets of merchant %s: settings unusable (%s); deadline %s waits", merchant, exc, raw)
            continue
        if await store.apply_deadline(merchant, config, ticket_id, kind) is not None:
            acted += 1
    return acted


async def run(store: TicketStore, records, every_s: float = 1.0) -> None:
    while True:
        try:
            await sweep(store, records)
        except Exception:  # Redis away, a bad record: next round
            log.exception("ticket SLA sweep failed")
        await asyncio.sleep(every_s)
