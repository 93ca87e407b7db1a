"""The built-in catalogue and order store, in Redis, for merchants without an OMS of their own
(and the demo). Keys under the merchant: `products` (hash id -> JSON), `products:text` (hash
"<lower-cased title and category>|<id>" -> id: searched with HSCAN MATCH, so Redis filters),
`orders` (hash id -> JSON), `cust:<customer>:orders` (sorted set of the customer's order ids,
newest last). Saving is one MULTI with its event in the outbox, like every tenant record.

Orders (what a customer bought, where it is carried) are stored sealed with the merchant's data
key (storage/crypto.py); products, the merchant's own catalogue, stay readable so Redis can
search them. An order stored before sealing existed reads as it was. Once the merchant's keys
are shredded its orders read as not found (`order` None, `orders_of` leaves them out).
"""
from __future__ import annotations

import time

import redis.asyncio as aioredis

from storage import crypto, outbox
from storage.events import Event

from .base import Order, Product, Tracking

MAX_SCAN = 20_000   # fields a search looks at, at most (a catalogue far bigger wants the HTTP adapter)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class BuiltinStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, merchant: str, shard: int = 0):
        self.r, self.p, self.m, self.shard = redis, prefix, merchant, shard

    def _k(self, *parts: str) -> str:
        return f"{self.p}m:{self.m}:" + ":".join(parts)

    @property
    def ring(self) -> crypto.Keyring:
        return crypto.keyring(self.r, self.p)

    def _order(self, raw: bytes | None) -> Order | None:
        """A stored order; None if there is none or the merchant's keys were shredded."""
        if not raw:
            return None
        try:
            return Order.model_validate_json(self.ring.open(self.m, raw))
        except crypto.Shredded:
            return None

    def _event(self, pipe, type_: str, payload: dict, customer_id: str = "") -> None:
        outbox.append(pipe, self.p, self.shard, [Event(merchant_id=self.m, type=type_, actor_key="commerce", seq=0,
                                                       customer_id=customer_id, ts=int(time.time() * 1000),
                                                       payload=payload)])

    # -- writes (the merchant's systems, by API key; or an import) ------------------------------
    async def save_products(self, products: list[Product]) -> int:
        old = await self.r.hmget(self._k("products"), [p.product_id for p in products]) if products else []
        async with self.r.pipeline(transaction=True) as pipe:
            for p, before in zip(products, old):
                if before:  # its old search text goes
                    prev = Product.model_validate_json(before)
                    pipe.hdel(self._k("products", "text"), _text(prev))
                pipe.hset(self._k("products"), p.product_id, p.model_dump_json())
                pipe.hset(self._k("products", "text"), _text(p), p.product_id)
            self._event(pipe, "commerce.products_saved", {"count": len(products),
                                                          "ids": [p.product_id for p in products[:50]]})
            await pipe.execute()
        return len(products)

    async def save_order(self, order: Order) -> bool:
        """Create or replace an order; True if new. An order can't change customer."""
        key = self._k("orders")
        before = self._order(await self.r.hget(key, order.order_id))
        if before and before.customer_id != order.customer_id:
            from .base import CommerceError
            raise CommerceError(f"customer_id: order {order.order_id} belongs to another customer")
        score, sealed = _order_time(order), self.ring.seal(self.m, order.model_dump_json().encode())
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(key, order.order_id, sealed)
            pipe.zadd(self._k("cust", order.customer_id, "orders"), {order.order_id: score})
            self._event(pipe, "commerce.order_saved", {"order_id": order.order_id, "status": order.status,
                                                       "new": before is None}, customer_id=order.customer_id)
            await pipe.execute()
        return before is None

    # -- reads (the Adapter) -------------------------------------------------------------------
    async def search_products(self, query: str, limit: int = 10) -> list[Product]:
        pattern = f"*{_glob_escape(query.strip().lower())}*|*"
        ids, seen = [], 0
        async for field, pid in self.r.hscan_iter(self._k("products", "text"), match=pattern, count=500):
            ids.append(pid)
            seen += 1
            if len(ids) >= limit or seen >= MAX_SCAN:
                break
        raws = await self.r.hmget(self._k("products"), ids) if ids else []
        return [Product.model_validate_json(r) for r in raws if r]

    async def product(self, product_id: str) -> Product | None:
        raw = await self.r.hget(self._k("products"), product_id)
        return Product.model_validate_json(raw) if raw else None

    async def orders_of(self, customer_id: str, limit: int = 10) -> list[Order]:
        ids = await self.r.zrevrange(self._k("cust", customer_id, "orders"), 0, limit - 1)
        raws = await self.r.hmget(self._k("orders"), ids) if ids else []
        orders = [self._order(r) for r in raws]
        return [o for o in orders if o is not None and o.customer_id == customer_id]

    async def order(self, customer_id: str, order_id: str) -> Order | None:
        order = self._order(await self.r.hget(self._k("orders"), order_id))
        return order if order is not None and order.customer_id == customer_id else None   # never another customer's

    async def tracking(self, customer_id: str, order_id: str) -> Tracking | None:
        order = await self.order(customer_id, order_id)
        return None if order is None else order.tracking


def _text(p: Product) -> str:
    return f"{p.title} {p.category}".lower().replace("|", " ") + f"|{p.product_id}"


def _order_time(order: Order) -> float:
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(order.created_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()
