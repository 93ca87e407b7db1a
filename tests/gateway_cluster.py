"""A whole peakdesk for websocket tests: Redis, Ray hosts, writer and gateway, a demo merchant
with an owner login, and a little trio websocket helper speaking the raw protocol."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from contextlib import asynccontextmanager

import msgpack
import orjson
import trio
import trio_websocket

from actors.cluster import Cluster
from actors.launcher import _demo_merchant, ensure_secret
from actors.settings import Settings


class Peakdesk:
    def __init__(self, redis_url: str, data_dir, namespace: str, prefix: str, port: int = 0, **settings):
        settings.setdefault("bot_workers", 0)  # a bot worker takes a CPU and seconds to load: bot tests ask for one
        # every test's visitors come from 127.0.0.1: tests/test_limits.py sets a small limit to test it
        settings.setdefault("widget_sessions_per_ip_per_min", 1_000_000)
        self.settings = Settings(data_dir=data_dir, redis_url=redis_url, hosts=2, port=port, namespace=namespace,
                                 prefix=prefix, **settings)
        self.tls = self.settings.tls_cert_file is not None   # then clients trust that certificate
        self.ssl = ssl.create_default_context(cafile=self.settings.tls_cert_file) if self.tls else None
        ensure_secret(self.settings.secret_file)
        self.cluster = Cluster(self.settings)
        self.cluster.start()
        _demo_merchant(self.settings)
        self.port = self.cluster.gateway_port
        creds = dict(line.split(": ", 1) for line in (data_dir / "demo-login.txt").read_text().splitlines())
        self.owner_token = self.post("/api/v1/auth/login", creds)["token"]

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def post(self, path: str, body: dict, token: str | None = None) -> dict:
        return self.request("POST", path, body, token)

    def request(self, method: str, path: str, body: dict | None, token: str | None = None,
                expect: int | None = None) -> dict:
        """JSON in, JSON out; a status other than 2xx (or than `expect`) fails the test."""
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        req = urllib.request.Request(f"{self.http_url}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        if (expect is None and not 200 <= status < 300) or (expect is not None and status != expect):
            raise AssertionError(f"{method} {path}: {status} {raw!r}")
        return json.loads(raw) if raw else {}

    def visitor_token(self, merchant: str = "demo") -> str:
        return self.post("/api/v1/auth/visitor", {"merchant": merchant})["token"]

    def stop(self) -> None:
        self.cluster.stop()


class Raw:
    """A websocket speaking frames as dicts; binary=True speaks msgpack."""

    def __init__(self, ws, binary: bool):
        self.ws, self.binary = ws, binary

    async def send(self, frame) -> None:
        await self.ws.send_message(msgpack.packb(frame) if self.binary else orjson.dumps(frame).decode())

    async def send_raw(self, data) -> None:
        await self.ws.send_message(data)

    async def recv(self, timeout: float = 10) -> dict:
        with trio.fail_after(timeout):
            data = await self.ws.get_message()
        return msgpack.unpackb(data) if isinstance(data, bytes) else orjson.loads(data)

    async def until(self, t: str, timeout: float = 10, **match) -> dict:
        """The next frame of type `t` (and matching fields); frames before it are kept in `skipped`."""
        with trio.fail_after(timeout):
            while True:
                frame = await self.recv(timeout)
                if frame.get("t") == t and all(frame.get(k) == v for k, v in match.items()):
                    return frame
                self.skipped.append(frame)

    skipped: list


@asynccontextmanager
async def connected(url: str, token: str, binary: bool = False, resume: dict | None = None):
    async with trio_websocket.open_websocket_url(url) as ws:
        raw = Raw(ws, binary)
        raw.skipped = []
        await raw.send({"t": "hello", "token": token, **({"resume": resume} if resume else {})})
        raw.welcome = await raw.until("welcome")
        yield raw
