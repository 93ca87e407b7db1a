"""/openapi.json beyond what quart-schema derives from request bodies: the query parameters each
operation reads, what it answers (the error shape every refusal has, 401 and 403 where callers
are checked, 429 with Retry-After where a limit counts), and who may call it — the bearer
token (the default), also an API key (`X-Api-Key`, or `Authorization: Bearer pdk_…`) where the
permission matrix lets a merchant's back end in, or nothing at all for public routes.

Query parameters are declared here in one table, by operation: handlers read them from
`request.args` and refuse a bad one with 422 naming it (whole numbers: gateway/errors.py's
`query_int`). tests/test_fuzz_rest.py checks that every parameter a handler reads is in the
table, and fuzzes them against what it says."""
from __future__ import annotations

import re

from pydantic import BaseModel
from quart_schema.openapi import OpenAPIProvider

from .permissions import Role, allowed

BEARER, API_KEY = {"bearer": []}, {"apiKey": []}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "A token from /api/v1/auth/login (agents) or /api/v1/auth/visitor or /customer "
                              "(widget customers); a merchant's API key (pdk_…) is also taken here."},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
               "description": "A merchant's API key, pdk_<key id>_<secret> (POST /api/v1/api-keys), for its own "
                              "systems: only the operations that list this scheme take one."},
}

# Routes nobody authenticates to: health and metrics, where tokens come from, the web pages and
# their public widget settings, and platforms' callbacks (checked by the platform's signature).
PUBLIC = {"/healthz", "/metrics", "/api/v1/auth/login", "/api/v1/auth/visitor", "/api/v1/auth/customer",
          "/console", "/supervisor", "/widget.js", "/web/{name}", "/widget-demo", "/api/v1/widget/{merchant}",
          "/hooks/{merchant}/{channel_id}"}
# Operations that take any credentials of the merchant themselves (not through `authorized`).
ANY_CREDENTIALS = {"POST /api/v1/attachments", "GET /api/v1/attachments/{attachment_id}"}
# Operations behind a limit counted in Redis (gateway/limits.py): 429 with Retry-After.
LIMITED = {"POST /api/v1/auth/login": "too_many_attempts: 10 failed passwords for the username in 15 minutes",
           "POST /api/v1/auth/visitor": "too_many_sessions: new visitors from the client's IP address this minute "
                                        "(widget_sessions_per_ip_per_min, 30 by default)",
           "POST /api/v1/attachments": "too_many_attempts: 60 uploads a minute per person or customer"}

# Operations that may answer 503 `unavailable`: what they need (a bot worker, ClickHouse through a
# writer, the merchant's own commerce system) did not answer; the same request may be retried.
UNAVAILABLE = re.compile(r"POST /api/v1/kb/try|GET /api/v1/(commerce|me)/.*|GET /api/v1/reports.*"
                         r"|GET /api/v1/events/export|POST /api/v1/events/count"
                         r"|GET /api/v1/customers/\{customer_id\}/conversations|GET /api/v1/conversations/.*"
                         r"|GET /api/v1/live|GET /healthz")


def _param(name: str, schema: dict, description: str, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _int(low: int, high: int, default: int | None = None) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high, **({"default": default} if default is not None else {})}


def _text(max_length: int | None = None, min_length: int | None = None) -> dict:
    return {"type": "string", **({"maxLength": max_length} if max_length else {}),
            **({"minLength": min_length} if min_length else {})}


def _enum(values, default: str) -> dict:
    return {"type": "string", "enum": list(values), "default": default}


def _report_range() -> list[dict]:
    return [_param("from", _text(40), "an ISO date (the day's start in tz) or date-time; default 7 days before to"),
            _param("to", _text(40), "an ISO date or date-time, exclusive; default now"),
            _param("tz", _text(64), "an IANA time zone such as Asia/Shanghai; default UTC")]


def query_parameters() -> dict[str, list[dict]]:
    """"METHOD /path/{template}" -> its query parameters."""
    from storage.reports import BUCKETS, STAFFING_OPTIONS

    from .reports_api import EXPORT_FORMATS
    from .widget_commerce_api import MAX_ORDERS

    staffing = [_param(name, {"type": "number", "minimum": low, "maximum": high, "default": default},
                       f"staffing report: {what}") for name, (default, low, high, what) in STAFFING_OPTIONS.items()]
    return {
        "GET /api/v1/customers": [
            _param("cursor", _int(0, 1 << 62, 0), "where the previous page ended (its next_cursor); 0: the first page"),
            _param("limit", _int(1, 200, 50), "customers per page")],
        "GET /api/v1/quick-replies": [_param("q", _text(100), "only replies whose shortcut or text contains this")],
        "GET /api/v1/commerce/products": [_param("q", _text(100, 1), "words of a title or category", required=True)],
        "GET /api/v1/commerce/compare": [_param("a", _text(128, 1), "a product id", required=True),
                                         _param("b", _text(128, 1), "another product id", required=True)],
        "GET /api/v1/kb/export": [_param("format", _enum(("json", "csv"), "json"),
                                         "json: a list of entries; csv: a spreadsheet")],
        "POST /api/v1/kb/import": [_param("mode", _enum(("merge", "replace"), "merge"),
                                          "merge: add and overwrite by id; replace: the import becomes the base")],
        "GET /api/v1/tickets": [
            _param("department", _text(), "its queue: open tickets, most urgent first"),   # filters: an unknown
            _param("customer", _text(), "the customer's tickets"),                          # value matches nothing
            _param("status", _text(), "only tickets in this status"),
            _param("assignee", _text(), "only tickets assigned to this agent (me: the caller)"),
            _param("limit", _int(1, 200, 50), "tickets per page"),
            _param("offset", _int(0, 1 << 31, 0), "tickets to skip")],
        "GET /api/v1/me/orders": [_param("limit", _int(1, MAX_ORDERS, 10), "the newest orders, at most this many")],
        "POST /api/v1/attachments": [_param("name", _text(255, 1), "the file's name", required=True)],
        "GET /api/v1/reports/{name}": [*_report_range(),
                                       _param("by", _enum(BUCKETS, "day"), "the time buckets of the rows"),
                                       _param("format", _enum(("json", "csv"), "json"), "json, or a CSV file"),
                                       *staffing],
        "GET /api/v1/events/export": [*_report_range(),
                                      _param("format", _enum(EXPORT_FORMATS, "parquet"),
                                             "the file's format (31 days at most)")],
        "GET /widget-demo": [
            _param("merchant", _text(64), "the merchant whose widget to show; default demo"),
            _param("group", _text(64), "the widget's default group"),
            _param("product", _text(128), "the product the page plays (data-product)"),
            _param("customer_id", _text(128),
                   "a signed-in customer (with ts and signature: docs/widget-identity.md)"),
            _param("ts", _text(12), "the signature's Unix seconds"),
            _param("signature", _text(128), "the merchant's HMAC of merchant, customer_id and ts")],
    }


def request_bodies(provider: OpenAPIProvider) -> tuple[dict[str, dict], dict]:
    """Bodies read raw (a JSON list of records, or CSV) rather than through validate_request."""
    from quart_schema import DataSource

    from actors.bot.kb import MAX_ENTRIES, Entry
    from storage.commerce import Product

    definitions: dict = {}

    def items(model) -> dict:
        body, defs = provider.build_request_body(model, DataSource.JSON)
        definitions.update(defs)
        return body["content"]["application/json"]["schema"]
    return {
        "POST /api/v1/commerce/products/import": {"required": True, "content": {"application/json": {"schema": {
            "type": "array", "items": items(Product), "minItems": 1, "maxItems": 5000}}},
            "description": "products, all saved or none (422 names the first bad one: [i].field)"},
        "POST /api/v1/kb/import": {"required": True, "content": {
            "application/json": {"schema": {"type": "array", "items": items(Entry), "maxItems": MAX_ENTRIES}},
            "text/csv": {"schema": {"type": "string"}}},
            "description": "entries as JSON, or CSV with the columns id, question, answer, alternatives, category, "
                           "cards; all imported or none"},
    }, definitions


class ErrorDetail(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    """A refusal: `error` is the code a client acts on, `field` the first bad field (docs/admin-api.md)."""
    error: str
    message: str
    field: str | None
    details: list[ErrorDetail]


def _error(description: str, headers: dict | None = None) -> dict:
    return {"description": description, **({"headers": headers} if headers else {}),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


RETRY_AFTER = {"Retry-After": {"description": "seconds until the same request would be taken",
                               "schema": {"type": "integer", "minimum": 1}}}


class PeakdeskOpenAPI(OpenAPIProvider):
    """quart-schema's document, with the additions above, operation by operation."""

    def __init__(self, app, extension) -> None:
        super().__init__(app, extension)
        self._queries: dict[str, list[dict]] | None = None   # built on first use: all blueprints are in
        self._bodies: dict[str, dict] = {}
        self._body_definitions: dict = {}

    def schema(self) -> dict:
        document = super().schema()
        document["components"]["securitySchemes"] = SECURITY_SCHEMES
        document["security"] = [BEARER]   # unless an operation says otherwise
        return document

    def build_paths(self, rule) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        if self._queries is None:
            self._queries = query_parameters()
            self._bodies, self._body_definitions = request_bodies(self)
        components.update(self._body_definitions)
        func = self._app.view_functions[rule.endpoint]
        action = getattr(func, "action", None)
        for path, operations in paths.items():
            for method, operation in operations.items():
                label = f"{method.upper()} {path}"
                operations[method] = self._operation(label, path, operation, action)
        body, definitions = self.build_response_object(ErrorBody, None)
        components.update(definitions)
        components["ErrorBody"] = body["content"]["application/json"]["schema"]
        return paths, components

    def _operation(self, label: str, path: str, operation: dict, action) -> dict:
        operation = {**operation, "parameters": [*operation["parameters"], *self._queries.get(label, [])],
                     "responses": {str(code): answer for code, answer in operation["responses"].items()}}
        if label in self._bodies:
            operation["requestBody"] = self._bodies[label]
        public = path in PUBLIC
        if public:
            operation["security"] = []
        elif label in ANY_CREDENTIALS or (action is not None and allowed(Role.API, action)):
            operation["security"] = [BEARER, API_KEY]
        responses = operation["responses"]
        if not any(re.fullmatch(r"2\d\d|2XX", code) for code in responses):
            responses["2XX"] = {"description": "done"}
        if not public:
            responses["401"] = _error("no credentials, or not valid ones (missing_token, invalid_token, expired_token, "
                                      "revoked_token, bad_api_key): get new ones")
        if action is not None:
            responses["403"] = _error(f"the caller's role may not {getattr(action, 'value', action)}")
        if label in LIMITED:
            responses["429"] = _error(LIMITED[label], RETRY_AFTER)
        if UNAVAILABLE.fullmatch(label):
            responses["503"] = (_error("unavailable: what this needs did not answer in time; try again")
                                if path != "/healthz" else {"description": "degraded: a component is not ok"})
        responses["4XX"] = _error("refused; nothing changed (docs/admin-api.md: 400, 404, 405, 409, 413, 415, 422)")
        return operation

