"""The admin REST API (`/api/v1`): the caller's own merchant, its agents, groups, customers,
quick replies and API keys. The merchant always comes from the caller's credentials."""
from __future__ import annotations

from quart import Blueprint
from quart_schema import validate_request

from actors.envelope import ActorRef, Envelope
from storage.records import NotFound

from .auth import Principal, hash_password, password_problem
from .context import actor_of, authorized, services
from .errors import ApiError
from .permissions import Action, Forbidden, allowed, may_assign_role
from .schemas import (AgentCreate, AgentUpdate, ApiKeyCreate, AttributesBody, GroupCreate, GroupUpdate,
                      MerchantUpdate, PasswordBody, QuickReplyCreate, QuickReplyUpdate, changes)

api = Blueprint("admin", __name__, url_prefix="/api/v1")


def _records():
    return services().records


def _check_password(password: str) -> None:
    problem = password_problem(password)
    if problem:
        raise ApiError(422, "invalid_field", f"password: {problem}", "password")


def _check_role_change(who: Principal, role: str | None) -> None:
    if role is not None and not may_assign_role(who.role, role):
        raise ApiError(403, "forbidden", f"role {who.role} may not assign role {role}", "role")


# -- merchant ----------------------------------------------------------------------------------
@api.get("/merchant")
@authorized(Action.MERCHANT_READ)
async def get_merchant(who: Principal):
    return await _records().get_merchant(who.merchant)


@api.patch("/merchant")
@authorized(Action.MERCHANT_UPDATE)
@validate_request(MerchantUpdate)
async def update_merchant(data: MerchantUpdate, who: Principal):
    wanted = changes(data)
    for i, rule in enumerate((wanted.get("settings") or {}).get("diversion") or []):
        try:
            await _records().get_group(who.merchant, rule["group"])
        except NotFound:
            field = f"settings.diversion[{i}].group"
            raise ApiError(422, "invalid_field", f"{field}: no group {rule['group']!r}", field) from None
    return await _records().update_merchant(who.merchant, wanted, actor=actor_of(who))


@api.post("/merchant/customer-secret")
@authorized(Action.MERCHANT_ROTATE_SECRET)
async def rotate_customer_secret(who: Principal):
    """The new secret is shown once, here; the widget's signed customer ids use it."""
    secret = await _records().rotate_customer_secret(who.merchant, actor=actor_of(who))
    return {"customer_secret": secret}


# -- agents ------------------------------------------------------------------------------------
@api.get("/agents")
@authorized(Action.AGENT_LIST)
async def list_agents(who: Principal):
    return {"items": await _records().list_agents(who.merchant)}


@api.post("/agents")
@authorized(Action.AGENT_CREATE)
@validate_request(AgentCreate)
async def create_agent(data: AgentCreate, who: Principal):
    _check_password(data.password)
    _check_role_change(who, data.role)
    fields = data.model_dump(exclude={"password"})
    agent = await _records().create_agent(who.merchant, password_hash=hash_password(data.password),
                                          actor=actor_of(who), **fields)
    return agent, 201


@api.get("/agents/me")
@authorized(Action.SELF_READ)
async def me(who: Principal):
    if who.kind != "agent":
        raise ApiError(404, "not_found", "only agents have a profile")
    return await _records().get_agent(who.merchant, who.id)


@api.put("/agents/me/password")
@authorized(Action.SELF_UPDATE_PASSWORD)
@validate_request(PasswordBody)
async def change_own_password(data: PasswordBody, who: Principal):
    _check_password(data.password)
    await _records().set_password(who.merchant, who.id, hash_password(data.password), actor=actor_of(who))
    return {"ok": True}


@api.get("/agents/<agent_id>")
@authorized(Action.AGENT_READ)
async def get_agent(agent_id: str, who: Principal):
    return await _records().get_agent(who.merchant, agent_id)


@api.patch("/agents/<agent_id>")
@authorized(Action.AGENT_UPDATE)
@validate_request(AgentUpdate)
async def update_agent(agent_id: str, data: AgentUpdate, who: Principal):
    wanted = changes(data)
    if "role" in wanted and not allowed(who.role, Action.AGENT_UPDATE_ROLE):
        raise ApiError(403, "forbidden", str(Forbidden(Action.AGENT_UPDATE_ROLE, who.role)), "role")
    _check_role_change(who, wanted.get("role"))
    await _protect_higher_role(who, agent_id)
    return await _records().update_agent(who.merchant, agent_id, wanted, actor=actor_of(who))


@api.post("/agents/<agent_id>/disable")
@authorized(Action.AGENT_DISABLE)
async def disable_agent(agent_id: str, who: Principal):
    if agent_id == who.id:
        raise ApiError(422, "invalid_field", "agent_id: you cannot disable yourself", "agent_id")
    await _protect_higher_role(who, agent_id)
    return await _records().disable_agent(who.merchant, agent_id, actor=actor_of(who))


@api.put("/agents/<agent_id>/password")
@authorized(Action.AGENT_SET_PASSWORD)
@validate_request(PasswordBody)
async def set_agent_password(agent_id: str, data: PasswordBody, who: Principal):
    _check_password(data.password)
    await _protect_higher_role(who, agent_id)
    await _records().set_password(who.merchant, agent_id, hash_password(data.password), actor=actor_of(who))
    return {"ok": True}


async def _protect_higher_role(who: Principal, agent_id: str) -> None:
    """An admin may not change an owner (nor anyone change a role it could not assign)."""
    target = await _records().get_agent(who.merchant, agent_id)
    if not may_assign_role(who.role, target["role"]):
        raise ApiError(403, "forbidden", f"role {who.role} may not change an agent whose role is {target['role']}")


# -- groups ------------------------------------------------------------------------------------
@api.get("/groups")
@authorized(Action.GROUP_LIST)
async def list_groups(who: Principal):
    return {"items": await _records().list_groups(who.merchant)}


@api.post("/groups")
@authorized(Action.GROUP_CREATE)
@validate_request(GroupCreate)
async def create_group(data: GroupCreate, who: Principal):
    group = await _records().create_group(who.merchant, group_id=data.group_id, name=data.name,
                                          routing=data.routing.model_dump(), actor=actor_of(who))
    return group, 201


@api.get("/groups/<group_id>")
@authorized(Action.GROUP_READ)
async def get_group(group_id: str, who: Principal):
    return await _records().get_group(who.merchant, group_id)


@api.patch("/groups/<group_id>")
@authorized(Action.GROUP_UPDATE)
@validate_request(GroupUpdate)
async def update_group(group_id: str, data: GroupUpdate, who: Principal):
    group = await _records().update_group(who.merchant, group_id, changes(data), actor=actor_of(who))
    await _configure_queue(who.merchant, group)
    return group


async def _configure_queue(merchant: str, group: dict) -> None:
    """The group's queue takes new routing settings at once (arrivals also carry them)."""
    router = services().router
    if router is not None and group.get("routing"):
        await router.send([Envelope(ActorRef("queue", merchant, group["group_id"]), "configure",
                                    {"routing": group["routing"]})])


@api.delete("/groups/<group_id>")
@authorized(Action.GROUP_DELETE)
async def delete_group(group_id: str, who: Principal):
    await _records().delete_group(who.merchant, group_id, actor=actor_of(who))
    return "", 204


# -- customers ---------------------------------------------------------------------------------
@api.get("/customers")
@authorized(Action.CUSTOMER_LIST)
async def list_customers(who: Principal):
    from quart import request

    cursor = _int_arg(request.args.get("cursor", "0"), "cursor", 0, 1 << 62)
    limit = _int_arg(request.args.get("limit", "50"), "limit", 1, 200)
    items, next_cursor = await _records().list_customers(who.merchant, cursor=cursor, limit=limit)
    return {"items": items, "next_cursor": next_cursor}


def _int_arg(raw: str, name: str, low: int, high: int) -> int:
    # isascii: str.isdigit() is also true of "²" or "٣", which int() refuses
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(422, "invalid_field", f"{name}: must be an integer from {low} to {high}", name)
    return int(raw)


@api.get("/customers/<customer_id>")
@authorized(Action.CUSTOMER_READ)
async def get_customer(customer_id: str, who: Principal):
    return await _records().get_customer(who.merchant, customer_id)


@api.patch("/customers/<customer_id>/attributes")
@authorized(Action.CUSTOMER_SET_ATTRIBUTES)
@validate_request(AttributesBody)
async def set_customer_attributes(customer_id: str, data: AttributesBody, who: Principal):
    if len(customer_id) > 128 or not customer_id.isprintable():
        raise ApiError(422, "invalid_field", "customer_id: at most 128 printable characters", "customer_id")
    return await _records().set_attributes(who.merchant, customer_id, data.attributes, actor=actor_of(who))


# -- quick replies (常用语) ---------------------------------------------------------------------
@api.get("/quick-replies")
@authorized(Action.QUICK_REPLY_LIST)
async def list_quick_replies(who: Principal):
    from quart import request

    query = request.args.get("q")
    if query is not None and (len(query) > 100 or not query.isprintable()):
        raise ApiError(422, "invalid_field", "q: at most 100 printable characters", "q")
    agent = who.id if who.kind == "agent" else None
    return {"items": await _records().list_quick_replies(who.merchant, agent_id=agent, query=query)}


@api.post("/quick-replies")
@authorized(Action.QUICK_REPLY_LIST)
@validate_request(QuickReplyCreate)
async def create_quick_reply(data: QuickReplyCreate, who: Principal):
    _require(who, Action.QUICK_REPLY_CREATE_SHARED if data.shared else Action.QUICK_REPLY_CREATE_OWN)
    owner = None if data.shared else who.id
    reply = await _records().create_quick_reply(who.merchant, owner=owner, shortcut=data.shortcut, text=data.text,
                                                category=data.category, actor=actor_of(who))
    return reply, 201


@api.patch("/quick-replies/<reply_id>")
@authorized(Action.QUICK_REPLY_LIST)
@validate_request(QuickReplyUpdate)
async def update_quick_reply(reply_id: str, data: QuickReplyUpdate, who: Principal):
    await _may_touch_reply(who, reply_id, Action.QUICK_REPLY_UPDATE_SHARED, Action.QUICK_REPLY_UPDATE_OWN)
    return await _records().update_quick_reply(who.merchant, reply_id, changes(data), actor=actor_of(who))


@api.delete("/quick-replies/<reply_id>")
@authorized(Action.QUICK_REPLY_LIST)
async def delete_quick_reply(reply_id: str, who: Principal):
    await _may_touch_reply(who, reply_id, Action.QUICK_REPLY_DELETE_SHARED, Action.QUICK_REPLY_DELETE_OWN)
    await _records().delete_quick_reply(who.merchant, reply_id, actor=actor_of(who))
    return "", 204


async def _may_touch_reply(who: Principal, reply_id: str, shared: Action, own: Action) -> None:
    reply = await _records().get_quick_reply(who.merchant, reply_id)
    if reply["owner"] is None:
        _require(who, shared)
    elif reply["owner"] == who.id:
        _require(who, own)
    else:  # another agent's personal reply: as if it did not exist
        raise ApiError(404, "not_found", f"quick_reply {reply_id} not found")


def _require(who: Principal, action: Action) -> None:
    if not allowed(who.role, action):
        raise ApiError(403, "forbidden", str(Forbidden(action, who.role)))


# -- API keys ----------------------------------------------------------------------------------
@api.get("/api-keys")
@authorized(Action.API_KEY_LIST)
async def list_api_keys(who: Principal):
    return {"items": await _records().list_api_keys(who.merchant)}


@api.post("/api-keys")
@authorized(Action.API_KEY_CREATE)
@validate_request(ApiKeyCreate)
async def create_api_key(data: ApiKeyCreate, who: Principal):
    """The key is shown once, in this answer; only its hash is kept."""
    record, plaintext = await _records().create_api_key(who.merchant, name=data.name, actor=actor_of(who))
    return {**record, "api_key": plaintext}, 201


@api.delete("/api-keys/<key_id>")
@authorized(Action.API_KEY_REVOKE)
async def revoke_api_key(key_id: str, who: Principal):
    await _records().revoke_api_key(who.merchant, key_id, actor=actor_of(who))
    return "", 204
