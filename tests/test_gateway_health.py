"""The gateway's HTTP server in process: /healthz all ok, a failing and a hanging component
named, unknown paths as JSON, a port in use refused with the address."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from gateway.app import create_app
from gateway.server import GatewayServer, GatewayStartError


async def ok():
    return None


async def broken():
    raise ConnectionError("redis is down")


async def hangs():
    await asyncio.sleep(60)


def get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def serve_and_get(checks, path="/healthz", timeout=3.0):
    async def main():
        server = GatewayServer(create_app(checks, check_timeout=timeout), "127.0.0.1", 0)
        await server.start()
        try:
            return await asyncio.to_thread(get, server.bound_port, path)
        finally:
            await server.stop()
    return asyncio.run(main())


def test_healthz_all_ok():
    assert serve_and_get({"ray": ok, "redis": ok, "clickhouse": ok}) == (
        200, {"status": "ok", "components": {"ray": "ok", "redis": "ok", "clickhouse": "ok"}})


def test_healthz_names_the_failing_component_and_its_error():
    status, body = serve_and_get({"ray": ok, "redis": broken, "clickhouse": ok})
    assert status == 503 and body["status"] == "degraded"
    assert body["components"] == {"ray": "ok", "redis": "error: ConnectionError: redis is down", "clickhouse": "ok"}


def test_healthz_reports_a_hanging_component_as_a_timeout():
    status, body = serve_and_get({"ray": ok, "clickhouse": hangs}, timeout=0.2)
    assert status == 503 and body["components"]["clickhouse"].startswith("error: timeout")


def test_unknown_paths_answer_json_404():
    assert serve_and_get({}, "/nope") == (404, {"error": "not_found", "message": "no such path: /nope",
                                                "field": None, "details": []})


def test_a_port_in_use_is_refused_naming_the_address():
    async def main():
        first = GatewayServer(create_app({}), "127.0.0.1", 0)
        await first.start()
        try:
            with pytest.raises(GatewayStartError, match=f"127.0.0.1:{first.bound_port}"):
                await GatewayServer(create_app({}), "127.0.0.1", first.bound_port).start()
        finally:
            await first.stop()
    asyncio.run(main())
