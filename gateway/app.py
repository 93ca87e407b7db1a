"""The gateway's Quart app. Here: health; the protocol issue adds the websocket endpoints and
the REST API. No business rules live here — the edge validates, authenticates, forwards."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Mapping

import orjson
from quart import Quart, Response, request

Check = Callable[[], Awaitable[None]]


def json_response(body: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/json")


async def _run_check(check: Check, timeout: float) -> str:
    try:
        await asyncio.wait_for(check(), timeout)
        return "ok"
    except asyncio.TimeoutError:
        return f"error: timeout: no answer within {timeout:g}s"
    except Exception as exc:  # a health check reports any failure as the component's state
        first_line = (str(exc).splitlines() or [""])[0]
        return f"error: {type(exc).__name__}: {first_line[:300]}"


def create_app(checks: Mapping[str, Check], check_timeout: float = 3.0) -> Quart:
    app = Quart("peakdesk.gateway")

    @app.get("/healthz")
    async def healthz() -> Response:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[n], check_timeout) for n in names))
        components = dict(zip(names, results))
        healthy = all(r == "ok" for r in results)
        return json_response({"status": "ok" if healthy else "degraded", "components": components},
                             200 if healthy else 503)

    @app.errorhandler(404)
    async def not_found(_exc) -> Response:
        return json_response({"error": "not found", "path": request.path}, 404)

    @app.errorhandler(405)
    async def not_allowed(_exc) -> Response:
        return json_response({"error": "method not allowed", "method": request.method, "path": request.path}, 405)

    return app
