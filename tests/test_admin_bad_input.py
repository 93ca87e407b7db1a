"""Bad input to the admin API: each kind gets a clear 4xx naming what is wrong, and no record
of any merchant changes. And secrets never leave: not in answers, events or logs."""
from __future__ import annotations

import logging
import time

import jwt
import pytest

from gateway.auth import Principal, TokenSigner, customer_signature
from tests.api_client import PASSWORD, SECRET, Api, run


def forged(kind: str, a) -> str:
    claims = {"sub": a.agents["owner"]["agent_id"], "m": a.merchant, "k": "agent", "r": "owner", "v": 0,
              "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": "x"}
    if kind == "other_secret":
        return jwt.encode(claims, b"z" * 48, algorithm="HS256")
    if kind == "alg_none":
        return jwt.encode(claims, None, algorithm="none")
    if kind == "tampered":
        head, payload, sig = a.tokens["agent"].split(".")
        return f"{head}.{payload[:-2]}xx.{sig}"
    if kind == "expired":
        p = Principal(kind="agent", merchant=a.merchant, id=a.agents["owner"]["agent_id"], role="owner")
        return TokenSigner(SECRET, clock=lambda: time.time() - 86_400).issue(p, ttl_s=60)[0]
    raise ValueError(kind)


def signed(a, customer_id="c1", ts=None, secret=None) -> dict:
    ts = int(time.time()) if ts is None else ts
    sig = customer_signature(secret or a.customer_secret, a.merchant, customer_id, ts)
    return {"merchant": a.merchant, "customer_id": customer_id, "ts": ts, "signature": sig}


OWNER = "owner"
AGENT = {"username": "newbie", "name": "新人", "password": "long enough password", "role": "agent"}

# (name, method, path, who: role | raw Authorization | None, json body | callable(a), expected status, field or code)
CASES = [
    ("login without password", "POST", "/api/v1/auth/login", None, {"merchant": "shop-a", "username": "owner1"}, 422, "password"),
    ("login password of wrong type", "POST", "/api/v1/auth/login", None, {"merchant": "shop-a", "username": "owner1", "password": 12345}, 422, "password"),
    ("login with an unknown field", "POST", "/api/v1/auth/login", None, {"merchant": "shop-a", "username": "owner1", "password": "x", "admin": True}, 422, "admin"),
    ("login merchant injection", "POST", "/api/v1/auth/login", None, {"merchant": "a'; DROP TABLE events; --", "username": "owner1", "password": "x"}, 422, "merchant"),
    ("login wrong password", "POST", "/api/v1/auth/login", None, {"merchant": "shop-a", "username": "owner1", "password": "wrong one"}, 401, "bad_credentials"),
    ("login unknown merchant", "POST", "/api/v1/auth/login", None, {"merchant": "nope", "username": "owner1", "password": PASSWORD}, 401, "bad_credentials"),
    ("no token", "GET", "/api/v1/agents", None, None, 401, "missing_token"),
    ("not a bearer header", "GET", "/api/v1/agents", "Token abc", None, 401, "invalid_token"),
    ("garbage token", "GET", "/api/v1/agents", "Bearer not.a.token", None, 401, "invalid_token"),
    ("expired token", "GET", "/api/v1/agents", "forged:expired", None, 401, "expired_token"),
    ("token signed by another secret", "GET", "/api/v1/agents", "forged:other_secret", None, 401, "invalid_token"),
    ("tampered token", "GET", "/api/v1/agents", "forged:tampered", None, 401, "invalid_token"),
    ("unsigned alg-none token", "GET", "/api/v1/agents", "forged:alg_none", None, 401, "invalid_token"),
    ("malformed API key", "GET", "/api/v1/customers", "Bearer pdk_xyz", None, 401, "bad_api_key"),
    ("unknown API key", "GET", "/api/v1/customers", "Bearer pdk_0123456789ab_" + "A" * 43, None, 401, "bad_api_key"),
    ("forged customer HMAC", "POST", "/api/v1/auth/customer", None, lambda a: signed(a, secret="not-the-merchant-secret"), 401, "forged_signature"),
    ("customer id signed for another", "POST", "/api/v1/auth/customer", None, lambda a: {**signed(a, "c1"), "customer_id": "c2"}, 401, "forged_signature"),
    ("stale customer signature", "POST", "/api/v1/auth/customer", None, lambda a: signed(a, ts=int(time.time()) - 7200), 401, "stale_signature"),
    ("customer signature not hex", "POST", "/api/v1/auth/customer", None, lambda a: {**signed(a), "signature": "zz"}, 422, "signature"),
    ("username injection", "POST", "/api/v1/agents", OWNER, {**AGENT, "username": "x' OR 1=1 --"}, 422, "username"),
    ("oversized name", "POST", "/api/v1/agents", OWNER, {**AGENT, "name": "名" * 101}, 422, "name"),
    ("control character in name", "POST", "/api/v1/agents", OWNER, {**AGENT, "name": "bell\x07"}, 422, "name"),
    ("number as a string", "POST", "/api/v1/agents", OWNER, {**AGENT, "max_concurrent": "5"}, 422, "max_concurrent"),
    ("capacity out of range", "POST", "/api/v1/agents", OWNER, {**AGENT, "max_concurrent": 0}, 422, "max_concurrent"),
    ("unknown role", "POST", "/api/v1/agents", OWNER, {**AGENT, "role": "superuser"}, 422, "role"),
    ("unknown group", "POST", "/api/v1/agents", OWNER, {**AGENT, "groups": ["nosuch"]}, 422, "groups"),
    ("weak password", "POST", "/api/v1/agents", OWNER, {**AGENT, "password": "short"}, 422, "password"),
    ("duplicate username", "POST", "/api/v1/agents", OWNER, {**AGENT, "username": "agent1"}, 409, "username"),
    ("missing required field", "POST", "/api/v1/agents", OWNER, {"username": "x1", "password": "long enough password"}, 422, "name"),
    ("group id injection", "POST", "/api/v1/groups", OWNER, {"group_id": "g1; DROP TABLE", "name": "x"}, 422, "group_id"),
    ("unknown agent id", "PATCH", "/api/v1/agents/ffffffffffff", OWNER, {"name": "x"}, 404, "not_found"),
    ("injection in a path id", "GET", "/api/v1/agents/1' OR '1'='1", OWNER, None, 404, "not_found"),
    ("unknown time zone", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"business_hours": {"timezone": "Mars/Base"}}}, 422, "settings.business_hours.timezone"),
    ("colour that is not a colour", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"theme": {"primary_color": "red"}}}, 422, "settings.theme.primary_color"),
    ("script URL as icon", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"theme": {"icon_url": "javascript:alert(1)"}}}, 422, "settings.theme.icon_url"),
    ("hours that end before they start", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"business_hours": {"days": {"mon": [{"start": "18:00", "end": "09:00"}]}}}}, 422, "settings.business_hours.days.mon.0"),
    ("too many attributes", "PATCH", "/api/v1/customers/c9/attributes", OWNER, {"attributes": {f"k{i}": i for i in range(101)}}, 422, "attributes"),
    ("oversized attribute value", "PATCH", "/api/v1/customers/c9/attributes", OWNER, {"attributes": {"note": "x" * 1025}}, 422, "attributes.note"),
    ("attribute key with spaces", "PATCH", "/api/v1/customers/c9/attributes", OWNER, {"attributes": {"bad key": 1}}, 422, "attributes.bad key"),
    ("empty quick reply", "POST", "/api/v1/quick-replies", OWNER, {"shortcut": "x", "text": ""}, 422, "text"),
    ("list limit not a number", "GET", "/api/v1/customers?limit=abc", OWNER, None, 422, "limit"),
    # storage's records are strict too: JSON of the wrong type is refused, not coerced
    ("product stock as a string", "PUT", "/api/v1/commerce/products/p1", OWNER, {"product_id": "p1", "title": "t", "stock": "12"}, 422, "stock"),
    ("product stock as a boolean", "PUT", "/api/v1/commerce/products/p1", OWNER, {"product_id": "p1", "title": "t", "stock": True}, 422, "stock"),
    ("imported stock as a string", "POST", "/api/v1/commerce/products/import", OWNER, [{"product_id": "p1", "title": "t", "stock": "12"}], 422, "[0].stock"),
    ("order quantity as a string", "PUT", "/api/v1/commerce/orders/o1", OWNER, {"order_id": "o1", "customer_id": "c1", "items": [{"title": "t", "qty": "2"}]}, 422, "items.0.qty"),
    ("order quantity as a boolean", "PUT", "/api/v1/commerce/orders/o1", OWNER, {"order_id": "o1", "customer_id": "c1", "items": [{"title": "t", "qty": True}]}, 422, "items.0.qty"),
    ("ticket SLA seconds as a string", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"tickets": {"sla": {"urgent": {"resolve_within_s": "3600"}}}}}, 422, "settings.tickets.sla.urgent.resolve_within_s"),
    ("ticket field required as a number", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"tickets": {"fields": [{"name": "reason", "label": "原因", "required": 0}]}}}, 422, "settings.tickets.fields.0.required"),
    ("commerce cache seconds as a boolean", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"commerce": {"adapter": "http", "http": {"base_url": "http://oms.example/api", "cache_s": False}}}}, 422, "settings.commerce.http.cache_s"),
    ("bot failures as a string", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"bot": {"max_failures": "2"}}}, 422, "settings.bot.max_failures"),
    ("bot switched on with a number", "PATCH", "/api/v1/merchant", OWNER, {"settings": {"bot": {"enabled": 1}}}, 422, "settings.bot.enabled"),
    ("tickets offset not a number", "GET", "/api/v1/tickets?offset=x", OWNER, None, 422, "offset"),
    ("JSON null body", "PATCH", "/api/v1/merchant", OWNER, "raw:null", 422, None),
    ("body that is not JSON", "POST", "/api/v1/auth/login", None, "raw:{merchant: shop-a", 400, "invalid_json"),
    ("body too large", "POST", "/api/v1/agents", OWNER, "raw:" + "x" * 300_000, 413, "too_large"),
    ("method not allowed", "DELETE", "/api/v1/merchant", OWNER, None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize("name,method,path,who,body,status,named", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(redis_url, prefix, name, method, path, who, body, status, named):
    async def main():
        async with Api(redis_url, prefix) as api:
            a, b = await api.tenant("shop-a"), await api.tenant("shop-b")
            before = (await api.dump("shop-a"), await api.dump("shop-b"), await api.r.xlen(f"{prefix}outbox:0"))
            headers, json_body, raw = {}, body(a) if callable(body) else body, None
            if isinstance(json_body, str) and json_body.startswith("raw:"):
                raw, json_body = json_body[4:].encode(), None
                headers["Content-Type"] = "application/json"
            token = None
            if who in ("owner", "admin", "supervisor", "agent"):
                token = a.tokens[who]
            elif isinstance(who, str) and who.startswith("forged:"):
                token = forged(who.split(":", 1)[1], a)
            elif isinstance(who, str):
                headers["Authorization"] = who
            got, answer = await api.call(method, path, token, json=json_body, headers=headers, data=raw)
            assert got == status, answer
            assert answer["message"]
            if named in ("bad_credentials", "missing_token", "invalid_token", "expired_token", "bad_api_key",
                         "forged_signature", "stale_signature", "not_found", "invalid_json", "too_large",
                         "method_not_allowed"):
                assert answer["error"] == named
            elif named is not None:
                assert answer["field"] == named or named in [d["field"] for d in answer["details"]], answer
            after = (await api.dump("shop-a"), await api.dump("shop-b"), await api.r.xlen(f"{prefix}outbox:0"))
            assert after == before
    run(main())


def test_passwords_and_secrets_never_appear_in_answers_events_or_logs(redis_url, prefix, caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        async with Api(redis_url, prefix) as api:
            a = await api.tenant("shop-a")
            secrets = [PASSWORD, a.customer_secret, a.api_key]
            answers = []
            new_pw = "秘密 passphrase 9981"
            _, created = await api.call("POST", "/api/v1/agents", a.tokens["owner"], json={**AGENT, "password": new_pw})
            answers.append(created)
            _, key = await api.call("POST", "/api/v1/api-keys", a.tokens["owner"], json={"name": "ERP"})
            _, rotated = await api.call("POST", "/api/v1/merchant/customer-secret", a.tokens["owner"])
            own_pw = "another secret phrase 77"
            answers.append((await api.call("PUT", "/api/v1/agents/me/password", a.tokens["agent"], json={"password": own_pw}))[1])
            secrets += [new_pw, key["api_key"], rotated["customer_secret"], own_pw]
            for path in ("/api/v1/agents", f"/api/v1/agents/{created['agent_id']}", "/api/v1/api-keys",
                         "/api/v1/merchant", "/api/v1/agents/me"):
                answers.append((await api.call("GET", path, a.tokens["owner"]))[1])
            login = (await api.call("POST", "/api/v1/auth/login",
                                    json={"merchant": "shop-a", "username": "newbie", "password": new_pw}))[1]
            answers.append({k: v for k, v in login.items() if k != "token"})
            outbox = repr(await api.r.xrange(f"{prefix}outbox:0"))
            for secret in secrets:
                for place, text in (("answers", repr(answers)), ("events", outbox), ("logs", caplog.text)):
                    assert secret not in text, (place, secret)
            for place, text in (("answers", repr(answers)), ("events", outbox), ("logs", caplog.text)):
                assert "$argon2" not in text, place
            assert key["api_key"].startswith("pdk_") and len(rotated["customer_secret"]) >= 32  # shown once, there
    run(main())
