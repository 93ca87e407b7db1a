"""The customer's own side of commerce, for the web widget (`/api/v1/me`): their recent orders,
to send one as an `order` card, and a product's details — the product of the page they came
from, to send as a `product` card.

Authenticated with the widget's own token (`/api/v1/auth/customer` or `/api/v1/auth/visitor`).
The customer is the token's and the merchant is the token's — never a path, query or body
field — so a customer only ever sees their own orders of their own merchant. Orders need a
customer the merchant's site signed in (docs/widget-identity.md): an anonymous visitor has none.
Agents and API keys read through `/api/v1/commerce` (gateway/commerce_api.py) instead.
"""
from __future__ import annotations

import re

from quart import Blueprint, request

from storage.commerce.base import ID

from .auth import Principal
from .commerce_api import _ask, adapter
from .context import current_principal
from .errors import ApiError

me_api = Blueprint("widget_commerce", __name__, url_prefix="/api/v1/me")
_PRODUCT_ID = re.compile(ID)
MAX_ORDERS = 20


async def _customer(signed_in: bool) -> Principal:
    who = await current_principal()
    if who.role != "customer" or who.kind not in ("customer", "visitor"):
        raise ApiError(403, "forbidden", "this is the widget's customer API: it takes a customer's or visitor's "
                                         "token; agents and API keys read /api/v1/commerce")
    if signed_in and who.kind != "customer":
        raise ApiError(403, "forbidden", "orders: an anonymous visitor has none; the merchant's site signs the "
                                         "customer in first (docs/widget-identity.md)")
    return who


@me_api.get("/orders")
async def my_orders():
    """The signed-in customer's own recent orders, newest first (`?limit=1-20`, default 10)."""
    who = await _customer(signed_in=True)
    for name in ("customer", "customer_id"):
        if name in request.args:
            raise ApiError(422, "invalid_field", f"{name}: not accepted here; the customer is the one of your token",
                           name)
    raw = request.args.get("limit", "10")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ORDERS:   # "²".isdigit() too
        raise ApiError(422, "invalid_field", f"limit: a whole number from 1 to {MAX_ORDERS}, got {raw[:20]!r}", "limit")
    found = await _ask((await adapter(who.merchant)).orders_of(who.id, limit=int(raw)))
    return {"items": [o.model_dump() for o in found if o.customer_id == who.id]}


@me_api.get("/products/<product_id>")
async def product(product_id: str):
    """One product of the token's merchant (the page's product, for the widget's product card)."""
    who = await _customer(signed_in=False)
    if not _PRODUCT_ID.match(product_id):
        raise ApiError(422, "invalid_field", "product_id: 1-128 of A-Z a-z 0-9 _ . : - starting with a letter or "
                                             "digit", "product_id")
    found = await _ask((await adapter(who.merchant)).product(product_id))
    if found is None:
        raise ApiError(404, "not_found", f"no product {product_id!r}")
    return found.model_dump()
