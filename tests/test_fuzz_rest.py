"""Fuzzing the REST API (issue 13): schemathesis generates requests from the gateway's own
OpenAPI document — valid ones and schema-violating ones (its negative mode) — and sends them in
process to the app of tests/api_client.py on the real test Redis, once as an owner (bearer
token) and once as a merchant's back end (API key).

Every answer must be: never a 5xx (but the documented 503 of the bot's try-out, which needs a
bot worker); a status the operation documents, with a body its documented schema takes (a 4xx is
JSON of the error shape, gateway/errors.py); a request that violates the document is refused with
a 4xx — bodies are strict, so JSON of the wrong type is such a request; an operation that declares
credentials refuses a request without them or with wrong ones.

The document declares what the handlers read (gateway/openapi.py): query parameters, raw list
bodies, the API-key scheme (X-Api-Key) of the operations a merchant's back end may call — which
the API-key run sends, and which every other operation refuses.

Bounded: EXAMPLES random cases per operation and caller (about a thousand requests, ~15 s).
PEAKDESK_FUZZ=deep: five times as many, and schemathesis' coverage phase (its systematic
boundary values: thousands of requests more, minutes).
"""
from __future__ import annotations

import asyncio
import copy
import inspect
import os
import re
import time
import urllib.parse
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (ignored_auth, negative_data_rejection, response_schema_conformance,
                                               status_code_conformance)

from gateway.app import create_app
from gateway.auth import TokenSigner, customer_signature
from gateway.context import Services
from storage.records import RecordStore
from tests.api_client import SECRET, Api

pytestmark = pytest.mark.timeout(300)

MERCHANT = "m1"
DEEP = os.environ.get("PEAKDESK_FUZZ") == "deep"
EXAMPLES = 8 * (5 if DEEP else 1)
ERROR_KEYS = {"error", "message", "field", "details"}
# Documented 5xx: the bot's try-out asks a bot worker, and this app has none ("unavailable").
UNAVAILABLE = {"POST /api/v1/kb/try"}


def make_app(redis_url: str, prefix: str):
    """tests/api_client.py's app: admin API, auth, knowledge base, commerce, tickets, channels."""
    return create_app({}, services=Services(RecordStore(aioredis.from_url(redis_url), prefix), TokenSigner(SECRET)))


_PLAIN = make_app("redis://127.0.0.1:1", "unused:")   # never connects: the document needs no Redis
DOCUMENT = orjson.loads(_PLAIN.json.dumps(_PLAIN.extensions["QUART_SCHEMA"].openapi_provider.schema()))


# The operations an API key may call (gateway/permissions.py: role "api"), as the document says.
API_KEY_OPERATIONS = sorted(f"{method.upper()} {path}" for path, operations in DOCUMENT["paths"].items()
                            for method, operation in operations.items()
                            if {"apiKey": []} in (operation.get("security") or []))


class Credentials:
    """The callers' real credentials, filled by the `callers` fixture. Requests carry a stand-in
    (schemathesis builds its coverage cases, credentials included, while pytest collects — before
    any fixture ran); the app swaps it for the real one. A fuzzed `PUT /agents/me/password` that
    succeeds revokes the owner's token (as it must): the owner then logs in again."""
    real = {"pd-owner": "", "pd-api-key": ""}

    @classmethod
    def swapped(cls, headers: list) -> list:
        out = []
        for name, value in headers:
            if name.lower() == b"authorization" and value.startswith(b"Bearer pd-"):
                value = b"Bearer " + cls.real.get(value[7:].decode(), value[7:].decode()).encode()
            elif name.lower() == b"x-api-key" and value.startswith(b"pd-"):
                value = cls.real.get(value.decode(), value.decode()).encode()
            out.append((name, value))
        return out


class LateApp:
    """The ASGI app schemathesis calls, named at collection; the real one (on the test Redis,
    which exists only once fixtures run) is set by the `callers` fixture."""
    target = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope = {**scope, "headers": Credentials.swapped(scope["headers"])}
        await self.target(scope, receive, send)


APP = LateApp()


def _schema(stand_in: str, header: str):
    schema = schemathesis.openapi.from_dict(copy.deepcopy(DOCUMENT))
    schema.app = APP
    schema.config.phases.update(phases=["examples", "fuzzing", *(["coverage"] if DEEP else [])])

    # Through schemathesis' auth, so that its negative cases (no or bad credentials) go out as
    # generated instead of being overwritten with good ones.
    @schema.auth(refresh_interval=None)
    class Credential:
        def get(self, case, ctx):
            return stand_in

        def set(self, case, data, ctx):
            value = f"Bearer {data}" if header == "Authorization" else data
            case.headers = {**(case.headers or {}), header: value}
    return schema


as_owner = _schema("pd-owner", "Authorization")
as_api_key = _schema("pd-api-key", "X-Api-Key").include(
    func=lambda ctx: ctx.operation.label in API_KEY_OPERATIONS)


# -- checks ---------------------------------------------------------------------------------------
def no_server_error(ctx, response, case) -> None:
    if response.status_code == 503 and case.operation.label in UNAVAILABLE:
        assert orjson.loads(response.content)["error"] == "unavailable", response.content
        return
    not_a_server_error(ctx, response, case)


def error_shape(ctx, response, case) -> None:
    """A 4xx is gateway/errors.py's JSON: {"error", "message", "field", "details"}."""
    if not 400 <= response.status_code < 500:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), f"{response.status_code} answered as {content_type!r}"
    body = orjson.loads(response.content)
    assert isinstance(body, dict) and set(body) == ERROR_KEYS, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["field"] is None or isinstance(body["field"], str), body
    assert isinstance(body["details"], list) and all(
        isinstance(d, dict) and isinstance(d.get("field"), str) and isinstance(d.get("reason"), str)
        for d in body["details"]), body


def invalid_rejected(ctx, response, case) -> None:
    """schemathesis' negative_data_rejection, where 413 (a body over the size limit, refused
    unread, as a list of more records than the document allows may be) is a refusal too."""
    if response.status_code != 413:
        negative_data_rejection(ctx, response, case)


CHECKS = [no_server_error, error_shape, invalid_rejected, ignored_auth, status_code_conformance,
          response_schema_conformance]
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def callers(redis_server):
    prefix = f"fz{uuid.uuid4().hex[:6]}:"

    async def setup():
        async with Api(redis_server.url, prefix) as api:
            assert (await api.call("GET", "/openapi.json"))[1] == DOCUMENT   # the document fuzzed is the one served
            return await api.tenant(MERCHANT)
    tenant = asyncio.run(setup())
    Credentials.real.update({"pd-owner": tenant.tokens["owner"], "pd-api-key": tenant.api_key})
    APP.target = make_app(redis_server.url, prefix)
    yield
    APP.target = None


def _relogin_after_own_password_change(case, response) -> None:
    if case.operation.label == "PUT /api/v1/agents/me/password" and case.method == "PUT" and response.status_code == 200:
        login = as_owner["/api/v1/auth/login"]["POST"].Case(
            body={"merchant": MERCHANT, "username": "owner1", "password": case.body["password"]})
        answer = login.call()
        assert answer.status_code == 200, answer.content
        Credentials.real["pd-owner"] = answer.json()["token"]


@as_owner.parametrize()
@SETTINGS
def test_no_request_of_an_owner_gets_a_5xx_or_an_undocumented_answer(case, callers):
    response = case.call_and_validate(checks=CHECKS)
    _relogin_after_own_password_change(case, response)


@as_api_key.parametrize()
@SETTINGS
def test_no_request_with_an_api_key_gets_a_5xx_or_an_undocumented_answer(case, callers):
    case.call_and_validate(checks=CHECKS)


def test_public_routes_declare_no_credentials_and_the_rest_a_bearer_or_also_an_api_key():
    """Regression (found by the fuzz's ignored_auth check): /healthz and the token endpoints
    answer without credentials, so the document must not demand the bearer scheme for them.
    Operations a merchant's back end may call also declare the API key (X-Api-Key)."""
    public = {"/healthz", "/api/v1/auth/login", "/api/v1/auth/visitor", "/api/v1/auth/customer"}
    assert DOCUMENT["security"] == [{"bearer": []}]
    assert DOCUMENT["components"]["securitySchemes"]["apiKey"] == {
        **DOCUMENT["components"]["securitySchemes"]["apiKey"], "type": "apiKey", "in": "header", "name": "X-Api-Key"}
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security")
            assert (security == []) == (path in public), (method, path, security)
            assert security in (None, [], [{"bearer": []}, {"apiKey": []}]), (method, path, security)
    assert "GET /api/v1/tickets" in API_KEY_OPERATIONS and "GET /api/v1/agents" not in API_KEY_OPERATIONS


def test_an_api_key_is_taken_exactly_where_the_document_says(redis_server):
    """Every operation that declares credentials, called with a valid API key in X-Api-Key (no
    body, made-up ids): refused 403 where the document does not list the key, and never refused
    for who is calling where it does (a 4xx about the request is fine)."""
    async def main():
        async with Api(redis_server.url, f"fk{uuid.uuid4().hex[:6]}:") as api:
            tenant = await api.tenant(MERCHANT)
            for path, operations in DOCUMENT["paths"].items():
                for method, operation in operations.items():
                    if operation.get("security") == []:
                        continue
                    label = f"{method.upper()} {path}"
                    status, body = await api.call(method.upper(), re.sub(r"\{[^}]+\}", "x", path),
                                                  headers={"X-Api-Key": tenant.api_key})
                    if label in API_KEY_OPERATIONS:
                        assert status not in (401, 403), (label, status, body)
                    else:
                        assert (status, body["error"]) == (403, "forbidden"), (label, status, body)
    asyncio.run(main())


def test_every_query_parameter_a_handler_reads_is_declared():
    """The document's query parameters (gateway/openapi.py) cover what each handler reads from
    request.args — on a gateway with everything mounted (web pages, reports, attachments)."""
    app = create_app({}, services=Services(RecordStore(aioredis.from_url("redis://127.0.0.1:1"), "unused:"),
                                           TokenSigner(SECRET), router=object(), query=object(), attachments=object()))
    document = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    read = re.compile(r"""(?:args\.get\(|args\[|query_int\(args, )["']([a-z_]+)["']""")
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.websocket:
            continue
        source = inspect.getsource(inspect.unwrap(app.view_functions[rule.endpoint]))
        names = set(read.findall(source))
        path = re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = document["paths"].get(path, {}).get(method.lower())
            if operation is None:   # not in the document (/static, /openapi.json itself)
                assert not names, (method, path, names)
                continue
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
            assert names <= declared, (method, path, names - declared)
            checked += bool(names)
    assert checked >= 10


# -- numbers in query strings ---------------------------------------------------------------------
# schemathesis makes the declared integers and their violations, rarely the digits of every
# script, signs, exponents or huge values a parser may trip on: these are fuzzed here. A refusal
# names the parameter (gateway/errors.py's "field").
NUMERIC_QUERY = [   # path, parameter, caller, the fields a refusal may name
    ("/api/v1/customers", "cursor", "owner", {"cursor"}),
    ("/api/v1/customers", "limit", "owner", {"limit"}),
    ("/api/v1/tickets", "limit", "api", {"limit"}),
    ("/api/v1/tickets", "offset", "api", {"offset"}),
    ("/api/v1/me/orders", "limit", "customer", {"limit"}),
]
NUMBERS = st.one_of(
    st.text(max_size=24),
    st.from_regex(r"\A[+-]?[0-9]{1,30}\Z"),
    st.text(alphabet=st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=4),   # ²  ٣  ５  Ⅻ
    st.sampled_from(["²", "¹⁰", "٣", "५", "５", "1e3", " 5", "+5", "1_000", "0x10", "", "-0", "18446744073709551616"]))


@pytest.fixture(scope="module")
def live(redis_server):
    """tests/api_client.py's Api on one event loop kept for the module, with an owner, an API key
    and a signed-in widget customer."""
    runner = asyncio.Runner()
    api = runner.run(Api(redis_server.url, f"fq{uuid.uuid4().hex[:6]}:").__aenter__())
    tenant = runner.run(api.tenant(MERCHANT))
    ts = int(time.time())
    status, body = runner.run(api.call("POST", "/api/v1/auth/customer", json={
        "merchant": MERCHANT, "customer_id": "c-1", "ts": ts,
        "signature": customer_signature(tenant.customer_secret, MERCHANT, "c-1", ts)}))
    assert status == 200, body
    tokens = {"owner": tenant.tokens["owner"], "api": tenant.api_key, "customer": body["token"]}
    yield lambda path, who: runner.run(api.call("GET", path, tokens[who]))
    runner.run(api.__aexit__(None, None, None))
    runner.close()


@pytest.mark.parametrize("path,name,who,fields", NUMERIC_QUERY, ids=[f"{p}?{n}" for p, n, _, _ in NUMERIC_QUERY])
@settings(max_examples=40 * (5 if DEEP else 1), deadline=None, suppress_health_check=list(HealthCheck))
@given(value=NUMBERS)
def test_a_number_in_a_query_is_taken_or_refused_naming_it(live, path, name, who, fields, value):
    status, body = live(f"{path}?{name}={urllib.parse.quote(value)}", who)
    assert status in (200, 422), (status, body)
    if status == 422:
        assert body["error"] == "invalid_field" and body["field"] in fields, body


def test_a_bad_tickets_offset_is_refused_naming_offset(live):
    """Regression: `?offset=x` was refused as "limit, offset: whole numbers" naming `limit`."""
    for query, field in (("offset=x", "offset"), ("offset=-1", "offset"), ("offset=%20", "offset"),
                         ("limit=x", "limit"), ("limit=0", "limit"), ("limit=5&offset=1e3", "offset")):
        status, body = live(f"/api/v1/tickets?{query}", "api")
        assert (status, body["error"], body["field"]) == (422, "invalid_field", field), (query, body)
        assert body["message"].startswith(f"{field}: a whole number"), body
    assert live("/api/v1/tickets?limit=5&offset=10", "api")[0] == 200
