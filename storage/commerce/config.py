"""A merchant's `settings.commerce`, validated, and the adapter it names."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .builtin import BuiltinStore
from .http import DEFAULT_ENDPOINTS, HttpAdapter


class HttpSettings(BaseModel):
    # strict: a client's JSON of the wrong type is refused naming the field ("2" is not 2, false is
    # not 0); stored settings were checked so, and are read back leniently (adapter_for)
    model_config = ConfigDict(extra="forbid", strict=True)
    base_url: str = Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=500)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)   # e.g. Authorization: Bearer …
    # at most 4 s: the bot's live answers (orders, comparisons) must land inside its 5 s turn
    timeout_s: float = Field(default=2.0, gt=0, le=4)
    cache_s: float = Field(default=30.0, ge=0, le=3600)
    endpoints: dict[Literal[tuple(DEFAULT_ENDPOINTS)], str] = Field(default_factory=dict)  # type: ignore[valid-type]
    map: dict = Field(default_factory=dict)


class CommerceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    adapter: Literal["builtin", "http"] = "builtin"
    http: Optional[HttpSettings] = None

    def model_post_init(self, _context) -> None:
        if self.adapter == "http" and self.http is None:
            raise ValueError("http: the http adapter needs its settings (base_url, ...)")


def adapter_for(redis, prefix: str, merchant: str, settings: dict | None, shard: int = 0, cache: dict | None = None):
    """The merchant's adapter; HTTP adapters are kept in `cache` (keyed by their settings), so
    their answer cache and connections live across requests."""
    config = CommerceSettings.model_validate(settings or {}, strict=False)
    if config.adapter == "builtin":
        return BuiltinStore(redis, prefix, merchant, shard)
    http = config.http.model_dump(mode="json")
    key = (merchant, repr(sorted(http.items())))
    if cache is not None and key in cache:
        return cache[key]
    adapter = HttpAdapter(http)
    if cache is not None:
        cache[key] = adapter
    return adapter
