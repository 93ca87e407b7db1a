"""The end of a bench run: was every message delivered exactly once, and do the events in
ClickHouse equal the events the run caused?"""
from __future__ import annotations

from collections import Counter

from .people import Ledger


def delivery(ledger: Ledger) -> dict[str, int]:
    """Lost: acknowledged to its sender, never received by the other side. Duplicated: received
    more than once (per-session sequence numbers), on the ledger or dropped by a client."""
    lost = duplicated = acked = delivered = 0
    for conv in ledger.conversations.values():
        acked += len(conv.customer_acked) + len(conv.agent_acked)
        lost += len(conv.customer_acked - set(conv.to_agent)) + len(conv.agent_acked - set(conv.to_customer))
        for seen in (conv.to_agent, conv.to_customer):
            delivered += len(seen)
            duplicated += sum(n - 1 for n in seen.values() if n > 1)
    return {"acked": acked, "delivered": delivered, "lost": lost, "duplicated": duplicated + ledger.repeats}


def expected_events(ledger: Ledger) -> Counter:
    """The session events the run caused, from what its people saw."""
    want: Counter = Counter()
    for conv in ledger.conversations.values():
        want["session.created"] += 1
        want["queue.entered"] += 1
        if conv.assigned:
            want["session.assigned"] += 1
            want["queue.left"] += 1
        want["message.sent"] += len(conv.customer_acked) + len(conv.agent_acked)
        want["session.closed"] += conv.closed
        want["csat.invited"] += conv.invited
        want["csat.rated"] += conv.rated
    return +want


def compare_events(want: Counter, got: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Types whose counts differ: {type: (expected, in ClickHouse)}."""
    types = set(want) | set(got)
    return {t: (want.get(t, 0), got.get(t, 0)) for t in sorted(types) if want.get(t, 0) != got.get(t, 0)}
