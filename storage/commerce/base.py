"""Records and the adapter interface shared by the built-in store and the HTTP adapter.

Records are validated on the way in (a merchant's push, a CSV row, an HTTP answer mapped to
our fields): a bad one is refused with the field named, never half-stored. Strictly: JSON of the
wrong type is refused (`"stock": "12"`, `"qty": true`, `"price": 299`), as the REST API documents
them; only the HTTP adapter, mapping a merchant's own JSON onto ours, validates leniently
(`strict=False`: its systems' "2" is a quantity of 2).
"""
from __future__ import annotations

from typing import Literal, Optional, Protocol

from pydantic import BaseModel, ConfigDict, Field

ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
ORDER_STATUSES = ("pending_payment", "paid", "processing", "shipped", "delivered", "completed", "cancelled",
                  "refunding", "refunded")


class CommerceError(ValueError):
    """A request or record that can't be used; the message names the field."""


class CommerceUnavailable(RuntimeError):
    """The merchant's system did not answer in time, or answered with an error: the panel says
    "unavailable", the bot hands over; nothing waits on it longer than its timeout."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


class Product(Record):
    product_id: str = Field(pattern=ID)
    title: str = Field(min_length=1, max_length=300)
    price: Optional[str] = Field(default=None, pattern=r"^\d{1,12}(\.\d{1,2})?$")
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    url: str = Field(default="", max_length=2000, pattern=r"^(https?://\S+)?$")
    image_url: str = Field(default="", max_length=2000, pattern=r"^(https?://\S+)?$")
    category: str = Field(default="", max_length=100)
    # what the comparison table shows: {"容量 Capacity": "3 L", "功率 Power": "600 W"}
    attributes: dict[str, str] = Field(default_factory=dict, max_length=50)
    stock: Optional[int] = Field(default=None, ge=0)


class OrderItem(Record):
    product_id: str = Field(default="", max_length=128)
    title: str = Field(min_length=1, max_length=300)
    qty: int = Field(default=1, ge=1, le=100000)
    price: Optional[str] = Field(default=None, pattern=r"^\d{1,12}(\.\d{1,2})?$")


class TrackingEvent(Record):
    at: str = Field(min_length=1, max_length=40)      # ISO time as the carrier gives it
    text: str = Field(min_length=1, max_length=500)   # "已揽收 Picked up in 杭州"
    location: str = Field(default="", max_length=200)


class Tracking(Record):
    order_id: str = Field(pattern=ID)
    carrier: str = Field(default="", max_length=100)          # 顺丰 SF Express
    tracking_no: str = Field(default="", max_length=100)
    status: str = Field(default="", max_length=60)             # in_transit, delivered, ...
    events: list[TrackingEvent] = Field(default_factory=list, max_length=200)   # newest first


class Order(Record):
    order_id: str = Field(pattern=ID)
    customer_id: str = Field(min_length=1, max_length=128)
    status: Literal[ORDER_STATUSES] = "paid"  # type: ignore[valid-type]
    total: Optional[str] = Field(default=None, pattern=r"^\d{1,12}(\.\d{1,2})?$")
    currency: str = Field(default="CNY", pattern=r"^[A-Z]{3}$")
    created_at: str = Field(default="", max_length=40)
    items: list[OrderItem] = Field(default_factory=list, max_length=200)
    tracking: Optional[Tracking] = None


class Adapter(Protocol):
    """What peakdesk asks a merchant's systems. Every call is for one merchant (the adapter's),
    and `orders_of` / `order` for one customer: an order of another customer is "not found"."""

    async def search_products(self, query: str, limit: int = 10) -> list[Product]: ...
    async def product(self, product_id: str) -> Product | None: ...
    async def orders_of(self, customer_id: str, limit: int = 10) -> list[Order]: ...
    async def order(self, customer_id: str, order_id: str) -> Order | None: ...
    async def tracking(self, customer_id: str, order_id: str) -> Tracking | None: ...


def compare(a: Product, b: Product) -> dict:
    """Two products side by side: every attribute either has, one row each (the seed's
    rice-cooker example: 容量, 功率, 内胆, 价格)."""
    keys = list(dict.fromkeys([*a.attributes, *b.attributes]))
    rows = [["价格 Price", _price(a), _price(b)]] + [[k, a.attributes.get(k, "—"), b.attributes.get(k, "—")]
                                                    for k in keys]
    return {"products": [a.model_dump(), b.model_dump()], "columns": ["", a.title, b.title], "rows": rows}


def _price(p: Product) -> str:
    return f"{p.price} {p.currency}" if p.price else "—"
