"""Counting a merchant's events in ClickHouse, by type, for a set of conversations: how
`peakdesk bench` proves that the events in ClickHouse equal the events its run caused, and how
an operator checks that nothing of a conversation is missing. Owners and admins (audit.read)."""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints
from quart import Blueprint
from quart_schema import validate_request

from .auth import Principal
from .context import authorized, services
from .errors import ApiError
from .permissions import Action
from .schemas import Strict

events_api = Blueprint("events", __name__, url_prefix="/api/v1/events")

SessionId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class EventCount(Strict):
    sessions: Annotated[list[SessionId], Field(min_length=1, max_length=20000)]


@events_api.post("/count")
@authorized(Action.AUDIT_READ)
@validate_request(EventCount)
async def count(data: EventCount, who: Principal):
    """{"sessions": [...]} -> {"counts": {"message.sent": 120, ...}, "events": 310, "copies": 0}:
    distinct events per type, and how many stored rows repeat an event id (should be 0: inserts
    are idempotent by event id)."""
    query = services().query
    if query is None:
        raise ApiError(503, "unavailable", "no ClickHouse writer is reachable from this gateway")
    rows = await query("SELECT type, uniqExact(event_id), count() FROM events WHERE merchant_id = {m:String} "
                       "AND session_id IN {s:Array(String)} GROUP BY type", {"m": who.merchant, "s": data.sessions})
    counts = {str(t): int(n) for t, n, _ in rows}
    return {"counts": counts, "events": sum(counts.values()), "copies": sum(int(c) - int(n) for _, n, c in rows)}
