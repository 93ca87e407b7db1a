"""The bench's REST side: log in as the merchant's owner, make a group and simulated agents for
the run, hand out visitor tokens, count the run's events in ClickHouse. Plain urllib in worker
threads (the load itself is websockets on trio)."""
from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import trio

_LIMIT = trio.CapacityLimiter(16)


class SetupError(RuntimeError):
    """The server refused a set-up step; the message names the step and the server's answer."""


def http_base(ws_url: str) -> str:
    """ws://host:port/ws -> http://host:port"""
    scheme, rest = ws_url.split("://", 1)
    return ("https" if scheme == "wss" else "http") + "://" + rest.split("/", 1)[0]


def _call(base: str, method: str, path: str, body: dict | None, token: str | None) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(base + path, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        answer = exc.read()[:300]
        if exc.code == 429 and b"too_many_sessions" in answer:   # every simulated visitor comes from this machine
            raise SetupError(f"{method} {path}: 429: more new visitors than the server allows one IP a minute; "
                             "start it with `peakdesk up --widget-sessions-per-ip 1000000`") from None
        raise SetupError(f"{method} {path}: {exc.code} {answer!r}") from None
    except OSError as exc:
        raise SetupError(f"{method} {path}: cannot reach {base}: {exc}") from None


async def call(base: str, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    return await trio.to_thread.run_sync(_call, base, method, path, body, token, limiter=_LIMIT)


@dataclass
class Login:
    merchant: str
    username: str
    password: str

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> "Login":
        """The demo owner `peakdesk up` wrote on first start."""
        path = Path(data_dir) / "demo-login.txt"
        try:
            fields = dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)
            return cls(fields["merchant"], fields["username"], fields["password"])
        except (OSError, KeyError) as exc:
            raise SetupError(f"no login in {path} ({exc}); give --merchant, --username and --password") from None


@dataclass
class Cast:
    """What a run needs from the server."""

    owner_token: str
    merchant: str
    group: str
    agent_tokens: list[str]


async def prepare(base: str, login: Login, run_id: str, agents: int, capacity: int) -> Cast:
    owner = (await call(base, "POST", "/api/v1/auth/login",
                        {"merchant": login.merchant, "username": login.username, "password": login.password}))["token"]
    group = f"bench-{run_id}"
    await call(base, "POST", "/api/v1/groups", {"group_id": group, "name": f"bench {run_id}",
                                                "routing": {"strategy": "least_load"}}, owner)
    password = secrets.token_urlsafe(18)
    tokens: list[str] = []

    async def one(i: int) -> None:
        username = f"bench-{run_id}-{i}"
        await call(base, "POST", "/api/v1/agents", {"username": username, "name": f"Bench 客服 {i}", "password": password,
                                                    "groups": [group], "max_concurrent": capacity}, owner)
        tokens.append((await call(base, "POST", "/api/v1/auth/login", {
            "merchant": login.merchant, "username": username, "password": password}))["token"])

    async with trio.open_nursery() as nursery:
        for i in range(agents):
            nursery.start_soon(one, i)
    return Cast(owner, login.merchant, group, tokens)


async def visitor_token(base: str, merchant: str) -> str:
    return (await call(base, "POST", "/api/v1/auth/visitor", {"merchant": merchant}))["token"]


async def visitor_tokens(base: str, merchant: str, n: int) -> list[str]:
    """n anonymous visitors, fetched before the clock starts (16 at a time), so arrivals keep
    their schedule instead of waiting on HTTP."""
    tokens: list[str] = []

    async def one() -> None:
        tokens.append(await visitor_token(base, merchant))

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return tokens


async def events_in_clickhouse(base: str, owner_token: str, sessions: list[str]) -> dict:
    counts: dict[str, int] = {}
    copies = 0
    for i in range(0, len(sessions), 10_000):
        got = await call(base, "POST", "/api/v1/events/count", {"sessions": sessions[i:i + 10_000]}, owner_token)
        for t, n in got["counts"].items():
            counts[t] = counts.get(t, 0) + n
        copies += got.get("copies", 0)
    return {"counts": counts, "copies": copies}
