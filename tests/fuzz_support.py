"""What the fuzz tests share: every place in a JSON-like document where an edit can go."""
from __future__ import annotations


def slots(value, out: list | None = None) -> list:
    """Every (container, key) in `value`, depth first."""
    out = [] if out is None else out
    if isinstance(value, dict):
        for key in list(value):
            out.append((value, key))
            slots(value[key], out)
    elif isinstance(value, list):
        for i in range(len(value)):
            out.append((value, i))
            slots(value[i], out)
    return out
