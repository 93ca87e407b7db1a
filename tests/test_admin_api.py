"""The admin REST API end to end (Quart app, real Redis): every endpoint as every role, every
endpoint against another merchant's ids, and the OpenAPI document."""
from __future__ import annotations

import itertools

import pytest

from gateway.auth import hash_password
from gateway.permissions import Action, allowed
from tests.api_client import PASSWORD, Api, Tenant, run

HASH = hash_password(PASSWORD)
_n = itertools.count()


async def targets(api: Api, t: Tenant) -> dict:
    """Fresh records of merchant `t` for one call: destructive endpoints get their own."""
    m, i = t.merchant, next(_n)
    agent = await api.records.create_agent(m, username=f"target{i}", name="目标", password_hash=HASH, role="agent",
                                           skills=[], groups=[], max_concurrent=3, actor="test")
    group = await api.records.create_group(m, group_id=f"g{i}", name="售后", routing=None, actor="test")
    await api.records.set_attributes(m, f"cust{i}", {"vip": 3}, actor="test")
    reply = await api.records.create_quick_reply(m, owner=None, shortcut=f"hi{i}", text="您好", category="", actor="test")
    key, _ = await api.records.create_api_key(m, name=f"k{i}", actor="test")
    return {"agent": agent["agent_id"], "group": group["group_id"], "customer": f"cust{i}",
            "reply": reply["reply_id"], "key": key["key_id"]}


def body_for(name: str) -> dict | None:
    i = next(_n)
    return {
        "merchant.update": {"settings": {"welcome_message": "欢迎 welcome"}},
        "agent.create": {"username": f"new{i}", "name": "新人", "password": "a long enough pass", "role": "agent"},
        "agent.update": {"name": "改名"},
        "password": {"password": "another long password"},
        "group.create": {"group_id": f"new{i}", "name": "新组"},
        "group.update": {"name": "改组"},
        "attributes": {"attributes": {"vip": 5}},
        "reply.shared": {"shortcut": f"s{i}", "text": "亲，在的", "shared": True},
        "reply.own": {"shortcut": f"o{i}", "text": "my reply", "shared": False},
        "reply.update": {"text": "改了"},
        "key.create": {"name": f"ERP {i}"},
    }.get(name)


# (method, path, body name, the action that governs it)
ENDPOINTS = [
    ("GET", "/api/v1/merchant", None, Action.MERCHANT_READ),
    ("PATCH", "/api/v1/merchant", "merchant.update", Action.MERCHANT_UPDATE),
    ("POST", "/api/v1/merchant/customer-secret", None, Action.MERCHANT_ROTATE_SECRET),
    ("GET", "/api/v1/agents", None, Action.AGENT_LIST),
    ("POST", "/api/v1/agents", "agent.create", Action.AGENT_CREATE),
    ("GET", "/api/v1/agents/{agent}", None, Action.AGENT_READ),
    ("PATCH", "/api/v1/agents/{agent}", "agent.update", Action.AGENT_UPDATE),
    ("POST", "/api/v1/agents/{agent}/disable", None, Action.AGENT_DISABLE),
    ("PUT", "/api/v1/agents/{agent}/password", "password", Action.AGENT_SET_PASSWORD),
    ("GET", "/api/v1/agents/me", None, Action.SELF_READ),
    ("GET", "/api/v1/groups", None, Action.GROUP_LIST),
    ("POST", "/api/v1/groups", "group.create", Action.GROUP_CREATE),
    ("GET", "/api/v1/groups/{group}", None, Action.GROUP_READ),
    ("PATCH", "/api/v1/groups/{group}", "group.update", Action.GROUP_UPDATE),
    ("DELETE", "/api/v1/groups/{group}", None, Action.GROUP_DELETE),
    ("GET", "/api/v1/customers", None, Action.CUSTOMER_LIST),
    ("GET", "/api/v1/customers/{customer}", None, Action.CUSTOMER_READ),
    ("PATCH", "/api/v1/customers/{customer}/attributes", "attributes", Action.CUSTOMER_SET_ATTRIBUTES),
    ("GET", "/api/v1/quick-replies", None, Action.QUICK_REPLY_LIST),
    ("POST", "/api/v1/quick-replies", "reply.shared", Action.QUICK_REPLY_CREATE_SHARED),
    ("POST", "/api/v1/quick-replies", "reply.own", Action.QUICK_REPLY_CREATE_OWN),
    ("PATCH", "/api/v1/quick-replies/{reply}", "reply.update", Action.QUICK_REPLY_UPDATE_SHARED),
    ("DELETE", "/api/v1/quick-replies/{reply}", None, Action.QUICK_REPLY_DELETE_SHARED),
    ("GET", "/api/v1/api-keys", None, Action.API_KEY_LIST),
    ("POST", "/api/v1/api-keys", "key.create", Action.API_KEY_CREATE),
    ("DELETE", "/api/v1/api-keys/{key}", None, Action.API_KEY_REVOKE),
]
# Actions an API key can't do whatever the matrix says: they belong to a person.
PERSONAL = {Action.SELF_READ, Action.QUICK_REPLY_CREATE_OWN}


def expected_allowed(role: str, action: Action) -> bool:
    if role == "api" and action in PERSONAL:
        return False
    if action == Action.QUICK_REPLY_CREATE_SHARED or action == Action.QUICK_REPLY_CREATE_OWN:
        return allowed(role, action) and allowed(role, Action.QUICK_REPLY_LIST)
    if action in (Action.QUICK_REPLY_UPDATE_SHARED, Action.QUICK_REPLY_DELETE_SHARED):
        return allowed(role, action) and allowed(role, Action.QUICK_REPLY_LIST)
    return allowed(role, action)


@pytest.mark.parametrize("method,path,body,action", ENDPOINTS, ids=[f"{m} {p} {b or ''}" for m, p, b, _ in ENDPOINTS])
def test_every_endpoint_answers_every_role_as_the_matrix_says(redis_url, prefix, method, path, body, action):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            for role in ("owner", "admin", "supervisor", "agent", "api"):
                ids = await targets(api, a)
                status, answer = await api.call(method, path.format(**ids), a.tokens[role], json=body_for(body))
                if expected_allowed(role, action):
                    assert 200 <= status < 300, (role, status, answer)
                else:
                    assert status == 403, (role, status, answer)
                    assert answer["error"] == "forbidden"
    run(main())


@pytest.mark.parametrize("method,path,body,action", ENDPOINTS, ids=[f"{m} {p} {b or ''}" for m, p, b, _ in ENDPOINTS])
def test_merchant_a_can_neither_read_nor_change_merchant_b(redis_url, prefix, method, path, body, action):
    async def main():
        async with Api(redis_url, prefix) as api:
            a, b = await api.tenant("shop-a"), await api.tenant("shop-b")
            b_ids = await targets(api, b)
            before = await api.dump("shop-b")
            b_values = {str(v) for v in b_ids.values()} | {ag["agent_id"] for ag in b.agents.values()}
            named_in_path = {v for k, v in b_ids.items() if "{" + k + "}" in path}
            for role in ("owner", "admin", "supervisor", "agent", "api"):
                status, answer = await api.call(method, path.format(**b_ids), a.tokens[role], json=body_for(body))
                if action == Action.CUSTOMER_SET_ATTRIBUTES and status == 200:
                    # customers are created by the merchant's own systems pushing attributes: this
                    # makes a customer of A's with that id — B's customer stays untouched (below)
                    assert answer["attributes"] == {"vip": 5} and await api.records.get_customer("shop-a", b_ids["customer"])
                elif "{" in path:
                    assert status in (403, 404), (role, status, answer)
                text = repr(answer)  # (a 404 may repeat the id the caller sent; nothing else of B)
                assert "shop-b" not in text and not any(v in text for v in b_values - named_in_path), (role, answer)
            assert await api.dump("shop-b") == before
    run(main())


def test_quick_replies_of_another_agent_are_invisible_and_untouchable(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            status, mine = await api.call("POST", "/api/v1/quick-replies", a.tokens["agent"],
                                          json={"shortcut": "ship", "text": "今天发货 ships today"})
            assert status == 201
            _, listing = await api.call("GET", "/api/v1/quick-replies?q=%E5%8F%91%E8%B4%A7", a.tokens["supervisor"])
            assert mine["reply_id"] not in repr(listing)
            status, _ = await api.call("DELETE", f"/api/v1/quick-replies/{mine['reply_id']}", a.tokens["supervisor"])
            assert status == 404
            status, found = await api.call("GET", "/api/v1/quick-replies?q=%E5%8F%91%E8%B4%A7", a.tokens["agent"])
            assert [r["reply_id"] for r in found["items"]] == [mine["reply_id"]]
            status, _ = await api.call("PATCH", f"/api/v1/quick-replies/{mine['reply_id']}", a.tokens["agent"],
                                       json={"text": "明天发货"})
            assert status == 200
    run(main())


def test_an_admin_cannot_make_or_change_owners(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            owner_id = a.agents["owner"]["agent_id"]
            for method, path, body in [
                ("POST", "/api/v1/agents", {"username": "boss2", "name": "x", "password": "long enough pw", "role": "owner"}),
                ("PATCH", f"/api/v1/agents/{owner_id}", {"name": "demoted"}),
                ("POST", f"/api/v1/agents/{owner_id}/disable", None),
                ("PUT", f"/api/v1/agents/{owner_id}/password", {"password": "taken over now"}),
            ]:
                status, answer = await api.call(method, path, a.tokens["admin"], json=body)
                assert status == 403, (path, answer)
            assert (await api.records.get_agent("shop-a", owner_id))["name"] == a.agents["owner"]["name"]
    run(main())


def test_a_disabled_agent_is_locked_out_at_once(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            agent_id = a.agents["agent"]["agent_id"]
            status, _ = await api.call("POST", f"/api/v1/agents/{agent_id}/disable", a.tokens["admin"])
            assert status == 200
            status, answer = await api.call("GET", "/api/v1/agents/me", a.tokens["agent"])
            assert status == 401 and answer["error"] == "revoked_token"
            status, answer = await api.call("POST", "/api/v1/auth/login",
                                            json={"merchant": "shop-a", "username": "agent1", "password": PASSWORD})
            assert status == 401 and answer["error"] == "bad_credentials"
    run(main())


def test_openapi_document_lists_every_endpoint(redis_url, prefix):
    async def main():
        async with Api(redis_url, prefix) as api:
            status, doc = await api.call("GET", "/openapi.json")
            assert status == 200 and doc["openapi"].startswith("3.")
            paths = {p.replace("<", "{").replace(">", "}") for p in doc["paths"]}
            for method, path, _, _ in ENDPOINTS:
                template = path.replace("{agent}", "{agent_id}").replace("{group}", "{group_id}") \
                    .replace("{customer}", "{customer_id}").replace("{reply}", "{reply_id}").replace("{key}", "{key_id}")
                assert template in paths, template
                assert method.lower() in doc["paths"][template]
            assert "/api/v1/auth/login" in paths
            login_body = doc["paths"]["/api/v1/auth/login"]["post"]["requestBody"]
            assert login_body["content"]["application/json"]["schema"]
    run(main())
