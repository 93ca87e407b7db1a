"""Connectors are found through the Python entry-point group `peakdesk.connectors`: the built-in
ones are declared in peakdesk's own pyproject.toml, a third-party package declares its own

    [project.entry-points."peakdesk.connectors"]
    douyin = "peakdesk_douyin:DouyinConnector"

and is picked up by any peakdesk process started after `pip install` — nothing in peakdesk
changes (docs/connectors/writing-a-connector.md)."""
from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

from .base import Connector

log = logging.getLogger(__name__)
GROUP = "peakdesk.connectors"


class UnknownConnector(LookupError):
    pass


def available() -> dict[str, type]:
    """Every installed connector by name; one that fails to load is logged and left out."""
    importlib.invalidate_caches()
    found: dict[str, type] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take the gateway down
            log.error("connector %s (%s) failed to load: %s: %s", ep.name, ep.value, type(exc).__name__, exc)
            continue
        if not _looks_like_a_connector(cls):
            log.error("connector %s (%s) is not a connector: it needs name, Config, webhook() and send()", ep.name, ep.value)
            continue
        found[ep.name] = cls
    return found


def load(name: str) -> type:
    found = available()
    if name not in found:
        raise UnknownConnector(f"connector: no connector {name!r} is installed (installed: {sorted(found)})")
    return found[name]


def _looks_like_a_connector(cls) -> bool:
    return isinstance(cls, type) and all(hasattr(cls, a) for a in ("name", "Config", "webhook", "send")) \
        and issubclass(getattr(cls, "Config"), object)


__all__ = ["Connector", "GROUP", "UnknownConnector", "available", "load"]
