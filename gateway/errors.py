"""Every error the gateway's HTTP API answers is JSON of one shape:

    {"error": "<code>", "message": "<what is wrong, in words>", "field": "<first bad field or null>",
     "details": [{"field": "...", "reason": "..."}]}

Codes decide what a client does: 400/413/422 fix the request; 401 get a (new) token; 403 the
role may not; 404 no such record in the caller's merchant (ids of other merchants are simply not
found — never "forbidden", which would confirm they exist); 409 conflict with existing data;
410 `erased`: the merchant's data keys were shredded, its personal data is gone for good.
"""
from __future__ import annotations

import orjson
from pydantic import ValidationError
from quart import Quart, Response, has_request_context, request, websocket
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from storage import crypto


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def check_path_id(field: str, in_body: str, in_path: str) -> None:
    """A PUT's body names the record its path names, or nothing is saved (422 naming the field)."""
    if in_body != in_path:
        raise ApiError(422, "invalid_field", f"{field}: the body's {in_body!r} is not the path's {in_path!r}", field)


def query_int(args, name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter (`?limit=20`), or 422 naming it. ASCII digits only:
    int() would also take " 5", "+5", "1_000" and "٣"."""
    raw = args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(422, "invalid_field", f"{name}: a whole number from {low} to {high}, got {raw[:20]!r}", name)
    return int(raw)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   details: list[dict] | None = None) -> Response:
    body = {"error": code, "message": message, "field": field, "details": details or []}
    return Response(orjson.dumps(body), status=status, content_type="application/json")


_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _field_path(loc: tuple) -> str:
    """The client's field path: pydantic also puts union branches and validator names in the
    location ("attributes.note.function-after[...]", "x.[key]"), which name no field."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]
    return ".".join(parts) or "body"


def validation_details(exc: ValidationError) -> list[dict]:
    details, seen = [], set()
    for e in exc.errors(include_url=False):
        field = _field_path(e["loc"])
        if field not in seen:  # a union reports once per branch: keep the first reason
            seen.add(field)
            details.append({"field": field, "reason": e["msg"]})
    return details


def install(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.field)
        if getattr(exc, "retry_after_s", None):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.errorhandler(crypto.Shredded)
    async def erased(exc: crypto.Shredded) -> Response:
        # the merchant's data keys were shredded (right to erasure): nothing of it can be read or stored
        return error_response(410, "erased", f"{exc}: this merchant's personal data was erased")

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_body(exc: RequestSchemaValidationError) -> Response:
        inner = exc.validation_error
        if isinstance(inner, ValidationError):
            details = validation_details(inner)
            first = details[0] if details else {"field": "body", "reason": "invalid"}
            return error_response(422, "invalid_field", f"{first['field']}: {first['reason']}", first["field"], details)
        return error_response(400, "invalid_body", f"body: {inner}", "body")

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        # also a websocket's (Quart turns its unhandled errors into a 500 here): no `request` then
        where = request if has_request_context() else websocket
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                415: "unsupported_media_type"}.get(exc.code or 500, "http_error")
        message = {404: f"no such path: {where.path}", 405: f"{where.method} is not allowed on {where.path}",
                   413: "request body is too large"}.get(exc.code or 500, exc.description or exc.name)
        if exc.code == 400 and has_request_context() and await _body_is_bad_json():
            code, message = "invalid_json", "body is not valid JSON"
        return error_response(exc.code or 500, code, message)


async def _body_is_bad_json() -> bool:
    if not request.is_json:
        return False
    try:
        orjson.loads(await request.get_data())
        return False
    except orjson.JSONDecodeError:
        return True
