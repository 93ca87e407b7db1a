"""Operator commands on tenants: `peakdesk merchant|agent|apikey ...`. They write through the
same record store as the REST API (same validation, same audit events), straight to Redis."""
from __future__ import annotations

import asyncio
import getpass
import os
import secrets
from pathlib import Path
from typing import Any, Awaitable, Callable

import click
import redis.asyncio as aioredis
from pydantic import ValidationError

from storage.records import RecordStore


class AdminError(click.ClickException):
    """A refused command; the message names the field and the reason (exit status 1)."""


def operator() -> str:
    return f"cli:{getpass.getuser()}"


def run(redis_url: str, prefix: str, fn: Callable[[RecordStore], Awaitable[Any]]) -> Any:
    async def main():
        r = aioredis.from_url(redis_url)
        try:
            return await fn(RecordStore(r, prefix))
        finally:
            await r.aclose()
    return asyncio.run(main())


def validated(model, **fields):
    try:
        return model(**fields)
    except ValidationError as exc:
        e = exc.errors(include_url=False)[0]
        raise AdminError(f"{'.'.join(map(str, e['loc']))}: {e['msg']}") from None


def new_password() -> str:
    return secrets.token_urlsafe(12)


async def create_demo_merchant(records: RecordStore, data_dir: Path) -> Path | None:
    """On an empty system: a demo merchant with an owner login, so there is something to log in
    to. The password goes to a file only the operator can read, never to the log."""
    if await records.list_merchants():
        return None
    from gateway.auth import hash_password

    await records.create_merchant("demo", "Demo Shop 演示店铺", {"welcome_message": "您好，欢迎光临！Hello, welcome!"},
                                  actor="system")
    await records.create_group("demo", group_id="default", name="默认 Default", routing=None, actor="system")
    password = new_password()
    await records.create_agent("demo", username="owner", name="店主 Owner", password_hash=hash_password(password),
                               role="owner", skills=[], groups=["default"], max_concurrent=10, actor="system")
    path = data_dir / "demo-login.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"merchant: demo\nusername: owner\npassword: {password}\n")
    return path
