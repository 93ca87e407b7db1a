"""The gateway's Quart app. Here: health; the protocol issue adds the websocket endpoints and
the REST API. No business rules live here — the edge validates, authenticates, forwards."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Mapping

import orjson
from quart import Quart, Response
from quart_schema import security_scheme

from . import errors

Check = Callable[[], Awaitable[None]]

# Admin bodies are small records; anything larger is refused before it is read (413).
# Attachment uploads have their own, larger limit.
MAX_BODY_BYTES = 256 * 1024
KB_IMPORT_BYTES = 16 * 1024 * 1024   # a knowledge-base import: thousands of entries


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


def create_app(checks: Mapping[str, Check], check_timeout: float = 3.0, services=None, metrics=None) -> Quart:
    """`services` (gateway.context.Services) mounts the REST API; without it only health.
    `metrics` (gateway.metrics.GatewayMetrics) mounts `GET /metrics` (unauthenticated, like /healthz)."""
    app = Quart("peakdesk.gateway")
    from storage.attachments import MAX_BYTES

    app.config["MAX_CONTENT_LENGTH"] = MAX_BYTES  # the attachment limit: no body is ever larger

    @app.before_request
    async def body_limit() -> None:
        """Everything but attachment uploads is a small JSON record: refuse large ones unread."""
        from quart import abort, request

        upload = request.path == "/api/v1/attachments" and request.method == "POST"
        if upload or request.method in ("GET", "HEAD", "OPTIONS"):
            return
        limit = KB_IMPORT_BYTES if request.path == "/api/v1/kb/import" else MAX_BODY_BYTES
        if (request.content_length or 0) > limit:
            abort(413)
        if request.content_length is None and len(await request.get_data(cache=True)) > limit:
            abort(413)  # chunked: read (at most the global limit) and measure
    if services is not None:
        _mount_api(app, services)

    @app.get("/healthz")
    @security_scheme([])  # unauthenticated: the document must not claim the bearer scheme for it
    async def healthz() -> Response:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(checks[n], check_timeout) for n in names))
        components = dict(zip(names, results))
        healthy = all(r == "ok" for r in results)
        return json_response({"status": "ok" if healthy else "degraded", "components": components},
                             200 if healthy else 503)

    if metrics is not None:
        metrics.install(app)
    errors.install(app)
    return app


def _mount_api(app: Quart, services) -> None:
    from quart_schema import QuartSchema

    from .admin_api import api
    from .auth import AuthError
    from .auth_api import auth_api
    from .commerce_api import commerce_api
    from .kb_api import kb_api
    from .openapi import PeakdeskOpenAPI
    from .widget_commerce_api import me_api
    from .tickets_api import tickets_api
    from .webhooks_api import webhooks_api
    from .channels_api import channels_api, hooks_api
    from .ws import ws_api
    from storage.records import Conflict, NotFound

    app.config["PEAKDESK_SERVICES"] = services
    QuartSchema(app, openapi_path="/openapi.json", swagger_ui_path=None, redoc_ui_path=None, scalar_ui_path=None,
                info={"title": "peakdesk admin API", "version": "1"}, openapi_provider_class=PeakdeskOpenAPI)
    app.register_blueprint(auth_api)
    app.register_blueprint(api)
    app.register_blueprint(kb_api)
    app.register_blueprint(commerce_api)
    app.register_blueprint(me_api)
    app.register_blueprint(tickets_api)
    app.register_blueprint(webhooks_api)
    app.register_blueprint(channels_api)
    if services.router is not None:
        from .background import Background
        from .monitor import Monitor
        from .web_api import web_api

        app.register_blueprint(ws_api)
        app.register_blueprint(web_api)
        app.register_blueprint(hooks_api)
        monitor = app.config["PEAKDESK_MONITOR"] = Monitor(services)
        background = app.config["PEAKDESK_BACKGROUND"] = Background(services)

        @app.before_serving
        async def start_monitor() -> None:
            monitor.start()
            background.start()

        @app.after_serving
        async def stop_monitor() -> None:
            await monitor.stop()
            await background.stop()
    if services.query is not None:
        from .events_api import events_api
        from .reports_api import reports_api

        app.register_blueprint(events_api)
        app.register_blueprint(reports_api)
    if services.attachments is not None:
        from .attachments_api import attachments_api

        app.register_blueprint(attachments_api)

    @app.errorhandler(AuthError)
    async def unauthenticated(exc: AuthError) -> Response:
        return errors.error_response(401, exc.code, exc.message)

    @app.errorhandler(NotFound)
    async def not_found_record(exc: NotFound) -> Response:
        return errors.error_response(404, "not_found", str(exc))

    @app.errorhandler(Conflict)
    async def conflict(exc: Conflict) -> Response:
        return errors.error_response(409, "conflict", str(exc), getattr(exc, "field", None))

    @app.errorhandler(ValueError)
    async def invalid_value(exc: ValueError) -> Response:
        field = str(exc).split(":", 1)[0] if ":" in str(exc) else None
        return errors.error_response(422, "invalid_field", str(exc), field)
