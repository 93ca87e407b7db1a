"""Channels over HTTP: owners and admins connect platforms (`/api/v1/channels`, credentials
validated by the connector and stored encrypted, shown back as "***"), see which connectors are
installed (`/api/v1/connectors`); platforms call `/hooks/<merchant>/<channel>` (no login: the
connector checks the platform's own signature)."""
from __future__ import annotations

import logging
from typing import Annotated, Optional

from pydantic import Field, StringConstraints, ValidationError
from quart import Blueprint, Response, current_app, request
from quart_schema import validate_request

from connectors import registry
from connectors.base import Refused, WebhookRequest
from storage.channels import ChannelStore, channel_key, redact, unredact
from storage.records import NotFound

from .auth import Principal
from .context import actor_of, authorized, services
from .errors import ApiError, validation_details
from .permissions import Action
from .schemas import Strict, patch_of

log = logging.getLogger("peakdesk.channels")
channels_api = Blueprint("channels", __name__)
hooks_api = Blueprint("hooks", __name__)
ChannelId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
Group = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]


class ChannelCreate(Strict):
    connector: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$")]
    name: Name
    channel_id: Optional[ChannelId] = None
    group: Group = "default"          # where its conversations queue (diversion rules may send them elsewhere)
    rate_per_s: Optional[Annotated[int, Field(ge=1, le=1000)]] = None   # sends per second (the platform's limit)
    config: dict = {}


class ChannelUpdate(Strict):
    name: Optional[Name] = None
    group: Optional[Group] = None
    enabled: Optional[bool] = None
    rate_per_s: Optional[Annotated[int, Field(ge=1, le=1000)]] = None
    config: Optional[dict] = None     # whole; "***" keeps a credential as it is


def _store() -> ChannelStore:
    svc = services()
    return ChannelStore(svc.records.r, svc.records.p, channel_key(svc.signer.secret), svc.records.shard)


def _validated(connector: str, config: dict) -> dict:
    try:
        cls = registry.load(connector)
    except registry.UnknownConnector as exc:
        raise ApiError(422, "invalid_field", str(exc), "connector") from None
    try:
        cls.Config.model_validate(config)
        return dict(config)   # as given: a dump would mask SecretStr fields as "**********"
    except ValidationError as exc:
        first = validation_details(exc)[0]
        raise ApiError(422, "invalid_field", f"config.{first['field']}: {first['reason']}",
                       f"config.{first['field']}") from None


async def _check_group(merchant: str, group: str) -> None:
    if group != "default":
        try:
            await services().records.get_group(merchant, group)
        except NotFound:
            raise ApiError(422, "invalid_field", f"group: no group {group!r}", "group") from None


def _shown(merchant: str, channel: dict) -> dict:
    return {**channel, "config": redact(channel["config"]), "webhook_path": f"/hooks/{merchant}/{channel['channel_id']}"}


@channels_api.get("/api/v1/connectors")
@authorized(Action.CHANNEL_MANAGE)
async def list_connectors(who: Principal):
    """Installed connectors (built in or from pip packages) and their settings' JSON schema."""
    return {"items": [{"name": name, "config_schema": cls.Config.model_json_schema()}
                      for name, cls in sorted(registry.available().items())]}


@channels_api.get("/api/v1/channels")
@authorized(Action.CHANNEL_MANAGE)
async def list_channels(who: Principal):
    return {"items": [_shown(who.merchant, c) for c in await _store().list(who.merchant)]}


@channels_api.post("/api/v1/channels")
@authorized(Action.CHANNEL_MANAGE)
@validate_request(ChannelCreate)
async def create_channel(data: ChannelCreate, who: Principal):
    config = _validated(data.connector, data.config)
    await _check_group(who.merchant, data.group)
    channel = await _store().create(who.merchant, connector=data.connector, name=data.name, group=data.group,
                                    config=config, actor=actor_of(who), channel_id=data.channel_id,
                                    rate_per_s=data.rate_per_s)
    return _shown(who.merchant, channel), 201


@channels_api.get("/api/v1/channels/<channel_id>")
@authorized(Action.CHANNEL_MANAGE)
async def get_channel(channel_id: str, who: Principal):
    return _shown(who.merchant, await _store().get(who.merchant, channel_id))


@channels_api.patch("/api/v1/channels/<channel_id>")
@authorized(Action.CHANNEL_MANAGE)
@validate_request(ChannelUpdate)
async def update_channel(channel_id: str, data: ChannelUpdate, who: Principal):
    store = _store()
    current = await store.get(who.merchant, channel_id)
    changes = patch_of(data)
    if "config" in changes:
        changes["config"] = _validated(current["connector"], unredact(changes["config"], current["config"]))
    if "group" in changes:
        await _check_group(who.merchant, changes["group"])
    return _shown(who.merchant, await store.update(who.merchant, channel_id, changes, actor_of(who)))


@channels_api.delete("/api/v1/channels/<channel_id>")
@authorized(Action.CHANNEL_MANAGE)
async def delete_channel(channel_id: str, who: Principal):
    await _store().delete(who.merchant, channel_id, actor_of(who))
    return "", 204


# -- the platforms' side -----------------------------------------------------------------------------
@hooks_api.route("/hooks/<merchant>/<channel_id>", methods=["GET", "POST"])
async def webhook(merchant: str, channel_id: str):
    """A platform's callback. Unknown or switched-off channels are 404; a forged or malformed
    call is refused with the connector's reason logged, and nothing is stored."""
    channels = current_app.config["PEAKDESK_BACKGROUND"].channels
    try:
        channel = await channels.store.get(merchant, channel_id)
    except (NotFound, ValueError):
        return _plain(404, "no such channel")
    if not channel.get("enabled", True):
        return _plain(404, "no such channel")
    body = await request.get_data()
    call = WebhookRequest(method=request.method, path=request.path, query=dict(request.args.items()),
                          headers={k.lower(): v for k, v in request.headers.items()}, body=body)
    try:
        result = await channels.webhook(merchant, channel, call)
    except Refused as exc:
        log.warning("webhook refused: merchant=%s channel=%s connector=%s from=%s reason=%s", merchant, channel_id,
                    channel["connector"], request.remote_addr, exc.reason)
        return _plain(exc.status, exc.reason)
    return Response(result.body, status=result.status, content_type=result.content_type)


def _plain(status: int, text: str) -> Response:
    return Response(text, status=status, content_type="text/plain; charset=utf-8")
