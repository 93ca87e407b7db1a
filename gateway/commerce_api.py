"""Products, orders and tracking over REST (`/api/v1/commerce`), through the merchant's adapter
(storage/commerce): what the agent's side panel shows, what the product search sends as a card,
the comparison table; and the built-in store the merchant's systems fill (API keys, admins).
A merchant's system that is down answers 503 `unavailable` within its timeout."""
from __future__ import annotations

from pydantic import ValidationError
from quart import Blueprint, request
from quart_schema import validate_request

from storage.commerce import CommerceError, CommerceUnavailable, Order, Product
from storage.commerce.base import compare
from storage.commerce.builtin import BuiltinStore
from storage.commerce.config import adapter_for

from .auth import Principal
from .context import authorized, services
from .errors import ApiError, check_path_id
from .permissions import Action

commerce_api = Blueprint("commerce", __name__, url_prefix="/api/v1/commerce")
_ADAPTERS: dict = {}


async def adapter(merchant: str):
    records = services().records
    settings = ((await records.get_merchant(merchant)).get("settings") or {}).get("commerce")
    try:
        return adapter_for(records.r, records.p, merchant, settings, records.shard, _ADAPTERS)
    except ValueError as exc:
        raise ApiError(503, "unavailable", f"the merchant's commerce settings are not usable: {exc}") from None


async def _ask(call):
    try:
        return await call
    except CommerceUnavailable as exc:
        raise ApiError(503, "unavailable", str(exc)) from None


def _builtin(who: Principal) -> BuiltinStore:
    records = services().records
    return BuiltinStore(records.r, records.p, who.merchant, records.shard)


@commerce_api.get("/products")
@authorized(Action.COMMERCE_READ)
async def search_products(who: Principal):
    raw = request.args.get("q", "")
    query = raw.strip()
    if not query or len(raw) > 100:
        raise ApiError(422, "invalid_field", "q: 1-100 characters to search for", "q")
    found = await _ask((await adapter(who.merchant)).search_products(query, limit=20))
    return {"items": [p.model_dump() for p in found]}


@commerce_api.get("/products/<product_id>")
@authorized(Action.COMMERCE_READ)
async def one_product(product_id: str, who: Principal):
    found = await _ask((await adapter(who.merchant)).product(product_id))
    if found is None:
        raise ApiError(404, "not_found", f"no product {product_id!r}")
    return found.model_dump()


@commerce_api.get("/compare")
@authorized(Action.COMMERCE_READ)
async def compare_products(who: Principal):
    a_id, b_id = request.args.get("a", ""), request.args.get("b", "")
    if not a_id or not b_id:
        raise ApiError(422, "invalid_field", "a, b: two product ids to compare", "a")
    shop = await adapter(who.merchant)
    a, b = await _ask(shop.product(a_id)), await _ask(shop.product(b_id))
    missing = [pid for pid, p in ((a_id, a), (b_id, b)) if p is None]
    if missing:
        raise ApiError(404, "not_found", f"no product {', '.join(missing)}")
    return compare(a, b)


@commerce_api.get("/customers/<customer_id>/orders")
@authorized(Action.COMMERCE_READ)
async def orders_of(customer_id: str, who: Principal):
    found = await _ask((await adapter(who.merchant)).orders_of(customer_id, limit=20))
    return {"items": [o.model_dump() for o in found]}


@commerce_api.get("/customers/<customer_id>/orders/<order_id>")
@authorized(Action.COMMERCE_READ)
async def one_order(customer_id: str, order_id: str, who: Principal):
    shop = await adapter(who.merchant)
    found = await _ask(shop.order(customer_id, order_id))
    if found is None:  # unknown, or another customer's: the same answer
        raise ApiError(404, "not_found", f"no order {order_id!r} of customer {customer_id!r}")
    if found.tracking is None or not found.tracking.events:
        tracking = await _ask(shop.tracking(customer_id, order_id))
        found = found.model_copy(update={"tracking": tracking})
    return found.model_dump()


# -- the built-in store, filled by the merchant's systems ------------------------------------------
@commerce_api.put("/products/<product_id>")
@authorized(Action.COMMERCE_WRITE)
@validate_request(Product)
async def save_product(product_id: str, data: Product, who: Principal):
    check_path_id("product_id", data.product_id, product_id)
    await _builtin(who).save_products([data])
    return data.model_dump()


@commerce_api.post("/products/import")
@authorized(Action.COMMERCE_WRITE)
async def import_products(who: Principal):
    """A JSON list of products, all or nothing."""
    body = await request.get_json(silent=True)
    if not isinstance(body, list) or not 1 <= len(body) <= 5000:
        raise ApiError(422, "invalid_field", "body: a JSON list of 1-5000 products")
    products = []
    for i, item in enumerate(body):
        try:
            products.append(Product.model_validate(item))
        except ValidationError as exc:  # name the row and the field
            first = exc.errors()[0]
            field = ".".join(str(x) for x in first["loc"])
            raise ApiError(422, "invalid_field", f"[{i}].{field}: {first['msg']}", f"[{i}].{field}") from None
    return {"imported": await _builtin(who).save_products(products)}


@commerce_api.put("/orders/<order_id>")
@authorized(Action.COMMERCE_WRITE)
@validate_request(Order)
async def save_order(order_id: str, data: Order, who: Principal):
    """An order created or updated (status, tracking) by the merchant's systems."""
    check_path_id("order_id", data.order_id, order_id)
    try:
        created = await _builtin(who).save_order(data)
    except CommerceError as exc:
        raise ApiError(409, "conflict", str(exc), "customer_id") from None
    return data.model_dump(), 201 if created else 200
