"""Fuzzing the REST API (issue 13): schemathesis generates requests from the gateway's own
OpenAPI document — valid ones and schema-violating ones (its negative mode) — and sends them in
process to the app of tests/api_client.py on the real test Redis, once as an owner (bearer
token) and once as a merchant's back end (API key).

Every answer must be: never a 5xx (but the documented 503 of the bot's try-out, which needs a
bot worker); a 4xx is JSON of the documented error shape (gateway/errors.py); a request that
violates the document is refused with a 4xx; an operation that declares the bearer scheme refuses
a request without credentials or with wrong ones.

What the document does not say, the fuzz adds before generating (UNDOCUMENTED_* below): query
parameters and raw list bodies the handlers read without declaring them. No operation documents
its responses, so statuses and bodies are checked against the error shape, not the document.

Bounded: EXAMPLES random cases per operation and caller (about a thousand requests, ~15 s).
PEAKDESK_FUZZ=deep: five times as many, and schemathesis' coverage phase (its systematic
boundary values: thousands of requests more, minutes).
"""
from __future__ import annotations

import asyncio
import copy
import os
import time
import urllib.parse
import uuid

import orjson
import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import ValidationError
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.specs.openapi.checks import ignored_auth, negative_data_rejection

from gateway.app import create_app
from gateway.auth import TokenSigner, customer_signature
from gateway.context import Services
from storage.records import RecordStore
from tests.api_client import SECRET, Api

pytestmark = pytest.mark.timeout(300)

MERCHANT = "m1"
DEEP = os.environ.get("PEAKDESK_FUZZ") == "deep"
EXAMPLES = 8 * (5 if DEEP else 1)
# The operations an API key may call (gateway/permissions.py: role "api"); the others answer it 403
# before reading a thing, which the owner's run and tests/test_permissions.py cover.
API_KEY_PATHS = r"^/api/v1/(customers|kb|commerce|tickets|groups$|merchant$)"
ERROR_KEYS = {"error", "message", "field", "details"}

# Read by the handlers (request.args, or a raw body) but not declared in the document.
_ANY = {"type": "string"}
UNDOCUMENTED_QUERY = {
    ("get", "/api/v1/customers"): ("cursor", "limit"),
    ("get", "/api/v1/quick-replies"): ("q",),
    ("get", "/api/v1/commerce/products"): ("q",),
    ("get", "/api/v1/commerce/compare"): ("a", "b"),
    ("get", "/api/v1/kb/export"): ("format",),
    ("post", "/api/v1/kb/import"): ("mode",),
    ("get", "/api/v1/tickets"): ("department", "customer", "status", "assignee", "limit", "offset"),
    ("get", "/api/v1/me/orders"): ("limit",),
}
UNDOCUMENTED_BODY = {   # read with request.get_data / get_json: a JSON list of records
    ("post", "/api/v1/kb/import"): {"type": "array", "items": {"type": "object"}},
    ("post", "/api/v1/commerce/products/import"): {"type": "array", "items": {"type": "object"}},
}
# Documented 5xx: the bot's try-out asks a bot worker, and this app has none ("unavailable").
UNAVAILABLE = {"POST /api/v1/kb/try"}


def make_app(redis_url: str, prefix: str):
    """tests/api_client.py's app: admin API, auth, knowledge base, commerce, tickets, channels."""
    return create_app({}, services=Services(RecordStore(aioredis.from_url(redis_url), prefix), TokenSigner(SECRET)))


_PLAIN = make_app("redis://127.0.0.1:1", "unused:")   # never connects: the document needs no Redis
DOCUMENT = orjson.loads(_PLAIN.json.dumps(_PLAIN.extensions["QUART_SCHEMA"].openapi_provider.schema()))
REQUEST_MODELS = {   # "PUT /api/v1/kb/{entry_id}" -> the pydantic model its body is validated with
    f"{method} {rule.rule.replace('<', '{').replace('>', '}')}": getattr(_PLAIN.view_functions[rule.endpoint],
                                                                       QUART_SCHEMA_REQUEST_ATTRIBUTE)[0]
    for rule in _PLAIN.url_map.iter_rules() for method in rule.methods
    if hasattr(_PLAIN.view_functions[rule.endpoint], QUART_SCHEMA_REQUEST_ATTRIBUTE)}


def fuzzed_document() -> dict:
    doc = copy.deepcopy(DOCUMENT)
    for (method, path), names in UNDOCUMENTED_QUERY.items():
        doc["paths"][path][method]["parameters"] += [
            {"in": "query", "name": n, "required": False, "schema": _ANY} for n in names]
    for (method, path), body in UNDOCUMENTED_BODY.items():
        doc["paths"][path][method]["requestBody"] = {"content": {"application/json": {"schema": body}}}
    return doc


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


def _schema(stand_in: str):
    schema = schemathesis.openapi.from_dict(fuzzed_document())
    schema.app = APP
    schema.config.phases.update(phases=["examples", "fuzzing", *(["coverage"] if DEEP else [])])

    # Through schemathesis' auth, so that its negative cases (no or a bad Authorization) go out
    # as generated instead of being overwritten with good credentials.
    @schema.auth(refresh_interval=None)
    class Bearer:
        def get(self, case, ctx):
            return stand_in

        def set(self, case, data, ctx):
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
    return schema


as_owner = _schema("pd-owner")
# An API key is also taken as X-Api-Key, which the document does not declare: sent as the bearer it declares.
as_api_key = _schema("pd-api-key").include(path_regex=API_KEY_PATHS)


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


def coerced_only(case) -> bool:
    """A body that its (non-strict) model takes only by coercion: storage's records (products,
    orders, ticket settings) are validated in pydantic's lax mode — they also come from CSV rows —
    so `"stock": false` is stock 0, `"required": 0` is False, where the document says integer
    and boolean. Known and left as it is; anything else accepted against the document is not."""
    model = REQUEST_MODELS.get(case.operation.label)
    if model is None or case.body is None:
        return False
    try:
        model.model_validate(case.body)
    except ValidationError:
        return False
    try:
        model.model_validate(case.body, strict=True)
    except ValidationError:
        return True
    return False


def invalid_rejected(ctx, response, case) -> None:
    try:
        negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData:
        if not coerced_only(case):
            raise


CHECKS = [no_server_error, error_shape, invalid_rejected, ignored_auth]
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


def test_public_routes_declare_no_credentials_and_the_rest_the_bearer_scheme():
    """Regression (found by the fuzz's ignored_auth check): /healthz and the token endpoints
    answer without credentials, so the document must not demand the bearer scheme for them."""
    public = {"/healthz", "/api/v1/auth/login", "/api/v1/auth/visitor", "/api/v1/auth/customer"}
    assert DOCUMENT["security"] == [{"bearer": []}]
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            assert (operation.get("security") == []) == (path in public), (method, path, operation.get("security"))


# -- numbers in query strings ---------------------------------------------------------------------
# The document declares no query parameter (see UNDOCUMENTED_QUERY), so schemathesis rarely makes
# one that looks like a number: these are fuzzed here with digits of every script, signs,
# exponents, huge values. A refusal names the parameter (gateway/errors.py's "field").
NUMERIC_QUERY = [   # path, parameter, caller, the fields a refusal may name
    ("/api/v1/customers", "cursor", "owner", {"cursor"}),
    ("/api/v1/customers", "limit", "owner", {"limit"}),
    ("/api/v1/tickets", "limit", "api", {"limit"}),
    ("/api/v1/tickets", "offset", "api", {"limit"}),      # "limit, offset: whole numbers", field limit
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
