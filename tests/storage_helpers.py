"""Plain helpers for storage tests (fixtures live in tests.storage_fixtures)."""
from __future__ import annotations

import asyncio

from storage.events import Event


def make_events(n: int, merchant: str = "m1", session: str = "s1", ts0: int = 1_763_856_000_000,
                text: str = "你好, where is my order?") -> list[Event]:
    """`n` message events of one session, 1 ms apart, every analytic column filled."""
    return [
        Event(merchant_id=merchant, type="message.sent", actor_key=f"session:{merchant}:{session}",
              seq=i + 1, session_id=session, channel="web", agent_id="a1", customer_id="c1",
              group_id="g1", payload={"text": f"{text} #{i}", "lang": "zh-en"}, ts=ts0 + i)
        for i in range(n)
    ]


def run(coro, timeout: float = 60.0):
    """Run one async scenario to completion (the suite has no async test plugin)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
