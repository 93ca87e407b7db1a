"""Tickets (工单) over REST (`/api/v1/tickets`): open one from a conversation or by API, work a
department's queue, move it along the merchant's status flow, comment (or note internally),
and read the conversation it came from. Every person of the merchant and its systems (API keys)
handle tickets; the merchant's settings (`settings.tickets`) shape departments, flow and SLA."""
from __future__ import annotations

import time
from typing import Annotated, Literal, Optional

import orjson
from pydantic import Field, StringConstraints
from quart import Blueprint, request
from quart_schema import validate_request

from storage import crypto
from storage.actor_store import ActorStore, read_log, read_states
from storage.records import NotFound, audit
from storage.tickets import TicketError, TicketSettings, TicketStore, ticket_settings

from .auth import Principal
from .context import actor_of, authorized, services
from .errors import ApiError, query_int
from .permissions import Action
from .schemas import Strict, patch_of

tickets_api = Blueprint("tickets", __name__, url_prefix="/api/v1/tickets")

_Line = lambda n, lo=1: Annotated[str, StringConstraints(min_length=lo, max_length=n, strip_whitespace=True)]  # noqa: E731
_Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]
Priority = Literal["low", "normal", "high", "urgent"]
FieldValue = str | int | float


class Attachment(Strict):
    attachment_id: Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{32}$")]
    name: _Line(255)
    mime: Annotated[str, StringConstraints(pattern=r"^[a-z]+/[A-Za-z0-9.+-]{1,100}$")]
    size: Annotated[int, Field(ge=0)]


class TicketCreate(Strict):
    title: _Line(200)
    department: _Id
    description: _Line(10_000, 0) = ""
    type: _Line(64, 0) = ""
    priority: Priority = "normal"
    customer_id: Optional[_Id] = None
    session_id: Optional[_Id] = None        # the conversation it came from: its transcript is linked
    order_id: Optional[_Id] = None
    assignee: Optional[_Id] = None
    fields: Annotated[dict[str, Optional[FieldValue]], Field(max_length=30)] = {}
    attachments: Annotated[list[Attachment], Field(max_length=20)] = []


class TicketUpdate(Strict):
    status: Optional[_Id] = None
    department: Optional[_Id] = None
    assignee: Optional[Annotated[str, StringConstraints(pattern=r"^([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})?$")]] = None
    priority: Optional[Priority] = None
    type: Optional[_Line(64, 0)] = None
    title: Optional[_Line(200)] = None
    order_id: Optional[_Id] = None
    fields: Optional[Annotated[dict[str, Optional[FieldValue]], Field(max_length=30)]] = None


class CommentCreate(Strict):
    text: _Line(10_000)
    internal: bool = False          # a note for colleagues: never shown to the customer, never in webhooks
    attachments: Annotated[list[Attachment], Field(max_length=20)] = []


def _store() -> TicketStore:
    records = services().records
    return TicketStore(records.r, records.p, shard=records.shard)


async def _config(merchant: str) -> TicketSettings:
    try:
        return ticket_settings(await services().records.get_merchant(merchant))
    except ValueError as exc:
        raise ApiError(503, "unavailable", f"the merchant's ticket settings are not usable: {exc}") from None


def _by(who: Principal) -> dict:
    return {"kind": "agent" if who.kind == "agent" else "api", "id": who.id}


def _refused(exc: TicketError) -> ApiError:
    return ApiError(exc.status, "invalid_field" if exc.status == 422 else "conflict", str(exc), exc.field)


async def _check_assignee(merchant: str, agent_id: str | None) -> None:
    if agent_id:
        try:
            await services().records.get_agent(merchant, agent_id)
        except NotFound:
            raise ApiError(422, "invalid_field", f"assignee: no agent {agent_id!r}", "assignee") from None


@tickets_api.get("/config")
@authorized(Action.TICKET_READ)
async def config(who: Principal):
    """Departments, statuses and their flow, priorities' SLA, types and custom fields."""
    return (await _config(who.merchant)).model_dump()


@tickets_api.get("")
@authorized(Action.TICKET_READ)
async def list_tickets(who: Principal):
    """`?department=` its queue (open, most urgent first); `?customer=`; else all, newest first.
    Then `?status=`, `?assignee=` (`me` for the caller), `?limit=` (≤ 200), `?offset=`."""
    args = request.args
    limit, offset = query_int(args, "limit", 50, 1, 200), query_int(args, "offset", 0, 0, 1 << 31)
    assignee = args.get("assignee")
    if assignee == "me":
        assignee = who.id
    return await _store().list(who.merchant, department=args.get("department"), customer=args.get("customer"),
                               status=args.get("status"), assignee=assignee, limit=limit, offset=offset)


@tickets_api.post("")
@authorized(Action.TICKET_WRITE)
@validate_request(TicketCreate)
async def create_ticket(data: TicketCreate, who: Principal):
    body = data.model_dump()
    body["attachments"] = [a.model_dump() for a in data.attachments]
    if data.session_id:   # it must be this merchant's conversation, of this customer
        state, = await read_states(services().records.r, services().records.p, "session", who.merchant,
                                   [data.session_id])
        if state is None:
            raise ApiError(422, "invalid_field", f"session_id: no conversation {data.session_id!r}", "session_id")
        if data.customer_id and state.get("customer_id") and data.customer_id != state["customer_id"]:
            raise ApiError(422, "invalid_field", f"customer_id: conversation {data.session_id} is another customer's",
                           "customer_id")
        body["customer_id"] = data.customer_id or state.get("customer_id") or None
    await _check_assignee(who.merchant, data.assignee)
    try:
        ticket = await _store().create(who.merchant, await _config(who.merchant), body, _by(who))
    except TicketError as exc:
        raise _refused(exc) from None
    return ticket, 201


@tickets_api.get("/<ticket_id>")
@authorized(Action.TICKET_READ)
async def get_ticket(ticket_id: str, who: Principal):
    return await _store().get(who.merchant, ticket_id)


@tickets_api.patch("/<ticket_id>")
@authorized(Action.TICKET_WRITE)
@validate_request(TicketUpdate)
async def update_ticket(ticket_id: str, data: TicketUpdate, who: Principal):
    changes = patch_of(data)
    await _check_assignee(who.merchant, changes.get("assignee"))
    try:
        return await _store().update(who.merchant, await _config(who.merchant), ticket_id, changes, _by(who))
    except TicketError as exc:
        raise _refused(exc) from None


@tickets_api.post("/<ticket_id>/comments")
@authorized(Action.TICKET_WRITE)
@validate_request(CommentCreate)
async def comment(ticket_id: str, data: CommentCreate, who: Principal):
    try:
        ticket = await _store().comment(who.merchant, await _config(who.merchant), ticket_id, data.text,
                                        data.internal, [a.model_dump() for a in data.attachments], _by(who))
    except TicketError as exc:
        raise _refused(exc) from None
    return ticket["comments"][-1], 201


@tickets_api.get("/<ticket_id>/transcript")
@authorized(Action.TICKET_READ)
async def transcript(ticket_id: str, who: Principal):
    """The conversation the ticket came from (its durable log), internal notes included."""
    ticket = await _store().get(who.merchant, ticket_id)
    if not ticket["session_id"]:
        return {"session_id": "", "items": []}
    records, query = services().records, services().query
    pipe = records.r.pipeline(transaction=True)    # reading a conversation is on the audit trail
    audit(pipe, records.p, records.shard, who.merchant, "audit.conversation.viewed", actor_of(who),
          ticket["session_id"], {"via": f"ticket {ticket['number']}"}, int(time.time() * 1000),
          session_id=ticket["session_id"], customer_id=ticket["customer_id"])
    await pipe.execute()
    key = ActorStore(records.r, records.p).log_key("session", who.merchant, ticket["session_id"])
    items = [frame for _, frame in await read_log(records.r, records.p, who.merchant, key, 0, 2000)]
    if not items and query is not None:   # the live log is kept 7 days; ClickHouse holds every message since
        rows = await query("SELECT type, payload FROM events WHERE merchant_id = {m:String} AND session_id = {s:String}"
                           " AND type IN ('message.sent', 'note.added') ORDER BY seq LIMIT 2000",
                           {"m": who.merchant, "s": ticket["session_id"]})
        ring = crypto.keyring(records.r, records.p)
        items = [{**ring.open_payload(who.merchant, orjson.loads(p)), **({"internal": True} if t == "note.added" else {})}
                 for t, p in rows]
    return {"session_id": ticket["session_id"], "items": items}
