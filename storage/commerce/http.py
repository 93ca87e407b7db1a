"""The generic HTTP adapter: peakdesk calls the merchant's own endpoints (shop platform,
OMS/ERP, WMS) and maps their JSON onto Product / Order / Tracking.

Configured per merchant (`settings.commerce.http`):

    {"base_url": "https://oms.example.com/api",
     "headers": {"Authorization": "Bearer …"},
     "timeout_s": 2, "cache_s": 30,
     "endpoints": {"search_products": "/products?q={query}", "product": "/products/{product_id}",
                   "orders_of": "/customers/{customer_id}/orders", "order": "/orders/{order_id}",
                   "tracking": "/orders/{order_id}/logistics"},
     "map": {"product": {"product_id": "id", "title": "name", "price": "price.amount", ...},
             "order": {"order_id": "order_no", "customer_id": "buyer.id", "status": "state", "items": "lines", ...},
             "item": {...}, "tracking": {...}, "tracking_event": {...},
             "products": "data.items", "orders": "data.orders"}}

A mapping names, for each of our fields, a dotted path into the merchant's JSON ("price.amount",
"lines.0.sku"); fields not mapped are looked up under their own name. Status words are mapped
with `map.statuses` ({"WAIT_SELLER_SEND_GOODS": "paid", ...}). Every call has a strict
timeout; answers are cached (a conversation asks about the same order several times); any
failure — timeout, connection refused, an HTTP error, JSON that does not map onto a valid
record — raises CommerceUnavailable naming what went wrong.
"""
from __future__ import annotations

import time
import urllib.parse
from typing import Any

import httpx
from pydantic import ValidationError

from .base import CommerceUnavailable, Order, OrderItem, Product, Tracking, TrackingEvent

DEFAULT_ENDPOINTS = {"search_products": "/products?q={query}", "product": "/products/{product_id}",
                     "orders_of": "/customers/{customer_id}/orders", "order": "/orders/{order_id}",
                     "tracking": "/orders/{order_id}/tracking"}
MAX_CACHE = 5000


def pick(doc: Any, path: str) -> Any:
    """The value at a dotted path ("a.b.0.c"), or None."""
    for part in path.split(".") if path else []:
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


class HttpAdapter:
    def __init__(self, config: dict, client: httpx.AsyncClient | None = None):
        self.base = str(config["base_url"]).rstrip("/")
        self.endpoints = {**DEFAULT_ENDPOINTS, **(config.get("endpoints") or {})}
        self.map = config.get("map") or {}
        self.timeout = float(config.get("timeout_s", 2.0))
        self.cache_s = float(config.get("cache_s", 30.0))
        self.client = client or httpx.AsyncClient(headers=config.get("headers") or {}, timeout=self.timeout,
                                                  follow_redirects=False)
        self._cache: dict[str, tuple[float, Any]] = {}

    # -- the Adapter ---------------------------------------------------------------------------
    async def search_products(self, query: str, limit: int = 10) -> list[Product]:
        doc = await self._get("search_products", query=query)
        return [self._record(Product, "product", p) for p in self._list(doc, "products")][:limit]

    async def product(self, product_id: str) -> Product | None:
        doc = await self._get("product", product_id=product_id)
        return None if doc is None else self._record(Product, "product", doc)

    async def orders_of(self, customer_id: str, limit: int = 10) -> list[Order]:
        doc = await self._get("orders_of", customer_id=customer_id)
        orders = [self._order(o) for o in self._list(doc, "orders")]
        return [o for o in orders if o.customer_id == customer_id][:limit]   # the merchant's API could be wrong

    async def order(self, customer_id: str, order_id: str) -> Order | None:
        doc = await self._get("order", order_id=order_id, customer_id=customer_id)
        if doc is None:
            return None
        order = self._order(doc)
        return order if order.customer_id == customer_id else None          # never another customer's

    async def tracking(self, customer_id: str, order_id: str) -> Tracking | None:
        order = await self.order(customer_id, order_id)
        if order is None:
            return None
        if order.tracking is not None and order.tracking.events:
            return order.tracking
        doc = await self._get("tracking", order_id=order_id, customer_id=customer_id)
        return None if doc is None else self._tracking(doc, order_id)

    async def close(self) -> None:
        await self.client.aclose()

    # -- plumbing ------------------------------------------------------------------------------
    async def _get(self, what: str, **values: str) -> Any:
        path = self.endpoints[what].format(**{k: urllib.parse.quote(str(v), safe="") for k, v in values.items()})
        url = self.base + path
        hit = self._cache.get(url)
        if hit is not None and time.monotonic() - hit[0] < self.cache_s:
            return hit[1]
        try:
            response = await self.client.get(url, timeout=self.timeout)
        except httpx.TimeoutException:
            raise CommerceUnavailable(f"{what}: the merchant's system did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise CommerceUnavailable(f"{what}: cannot reach the merchant's system: {type(exc).__name__}") from None
        if response.status_code == 404:
            doc = None
        elif response.status_code >= 400:
            raise CommerceUnavailable(f"{what}: the merchant's system answered HTTP {response.status_code}")
        else:
            try:
                doc = response.json()
            except ValueError:
                raise CommerceUnavailable(f"{what}: the merchant's system answered something that is not JSON") from None
        if len(self._cache) >= MAX_CACHE:
            self._cache.clear()
        self._cache[url] = (time.monotonic(), doc)
        return doc

    def _list(self, doc: Any, name: str) -> list:
        items = pick(doc, self.map[name]) if name in self.map else doc
        if items is None:
            return []
        if not isinstance(items, list):
            raise CommerceUnavailable(f"{name}: expected a list at {self.map.get(name, 'the top level')!r}")
        return items

    def _fields(self, kind: str, doc: Any, names) -> dict:
        mapping = self.map.get(kind) or {}
        return {n: pick(doc, mapping.get(n, n)) for n in names}

    def _record(self, model, kind: str, doc: Any, **extra):
        values = self._fields(kind, doc, [n for n in model.model_fields if n not in extra])
        values = {k: _plain(k, v) for k, v in values.items() if v is not None}
        try:
            return model.model_validate({**values, **extra}, strict=False)   # the merchant's JSON, mapped: lenient
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(x) for x in first["loc"])
            raise CommerceUnavailable(f"{kind}.{field}: the merchant's data does not fit: {first['msg']}") from None

    def _order(self, doc: Any) -> Order:
        statuses = self.map.get("statuses") or {}
        raw_items = pick(doc, (self.map.get("order") or {}).get("items", "items")) or []
        items = [self._record(OrderItem, "item", i).model_dump() for i in raw_items] if isinstance(raw_items, list) else []
        raw_tracking = pick(doc, (self.map.get("order") or {}).get("tracking", "tracking"))
        order_id = str(pick(doc, (self.map.get("order") or {}).get("order_id", "order_id")) or "")
        tracking = self._tracking(raw_tracking, order_id).model_dump() if isinstance(raw_tracking, dict) else None
        status = pick(doc, (self.map.get("order") or {}).get("status", "status"))
        return self._record(Order, "order", doc, items=items, tracking=tracking,
                            status=statuses.get(str(status), status) if status is not None else "paid")

    def _tracking(self, doc: Any, order_id: str) -> Tracking:
        raw_events = pick(doc, (self.map.get("tracking") or {}).get("events", "events")) or []
        events = [self._record(TrackingEvent, "tracking_event", e).model_dump() for e in raw_events] \
            if isinstance(raw_events, list) else []
        return self._record(Tracking, "tracking", doc, order_id=order_id, events=events)


def _plain(name: str, value: Any) -> Any:
    """Numbers where we keep strings (prices), strings where we keep strings."""
    if name in ("price", "total") and isinstance(value, (int, float)):
        return f"{value:.2f}"
    if name in ("product_id", "order_id", "customer_id", "tracking_no", "at") and isinstance(value, (int, float)):
        return str(value)
    return value

