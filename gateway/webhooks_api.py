"""A merchant's webhook endpoints (`/api/v1/webhooks`): owners and admins add one (its signing
secret is shown once, in the answer), list them and remove them. Deliveries are signed and
retried (storage/webhooks.py, docs/admin-api.md)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints
from quart import Blueprint
from quart_schema import validate_request

from storage.webhooks import EVENTS, WebhookStore, public

from .auth import Principal
from .context import actor_of, authorized, services
from .permissions import Action
from .schemas import Strict

webhooks_api = Blueprint("webhooks", __name__, url_prefix="/api/v1/webhooks")


class WebhookCreate(Strict):
    url: Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#]+(/[^\s#]*)?$", max_length=1000)]
    events: Annotated[list[Literal[EVENTS]], Field(min_length=1, max_length=len(EVENTS))]  # type: ignore[valid-type]


def _store() -> WebhookStore:
    records = services().records
    return WebhookStore(records.r, records.p, records.shard)


@webhooks_api.get("")
@authorized(Action.WEBHOOK_MANAGE)
async def list_webhooks(who: Principal):
    return {"items": [public(w) for w in await _store().list(who.merchant)]}


@webhooks_api.post("")
@authorized(Action.WEBHOOK_MANAGE)
@validate_request(WebhookCreate)
async def create_webhook(data: WebhookCreate, who: Principal):
    return await _store().create(who.merchant, data.url, list(data.events), actor_of(who)), 201


@webhooks_api.delete("/<webhook_id>")
@authorized(Action.WEBHOOK_MANAGE)
async def delete_webhook(webhook_id: str, who: Principal):
    await _store().delete(who.merchant, webhook_id, actor_of(who))
    return "", 204
