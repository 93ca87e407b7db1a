"""The bot answering "where is my order / 快递到哪了" from the merchant's own systems: the
customer's latest order (or the order number they give) with its live tracking, through the
merchant's commerce adapter (storage/commerce). Only ever the asking customer's own orders:
the adapters answer "not found" for anybody else's.

No order found → the bot asks for the order number; an order number that isn't the customer's
→ "not found"; the merchant's system down → a person takes over.
"""
from __future__ import annotations

import re

from storage.commerce import CommerceUnavailable, Order, Tracking

from .text import has_cjk, normalise

_ASK = re.compile(
    r"快递|物流|包裹|到哪|发货了?[吗没]|什么时候(能)?(到|发货|送到)|单号|运单|订单(状态|到|呢|怎么样)|查(一下)?(订单|快递)|"
    r"\bwhere('?s| is) my (order|parcel|package|stuff|delivery)\b|\btrack(ing)?\b|\border status\b|"
    r"\b(has|did) (it|my order|my parcel|my package) (ship|shipped|arrive|been shipped)\b|"
    r"\bwhen (will|does) (it|my order|my parcel|my package) (arrive|ship|come)\b|\bdelivery status\b")
_ORDER_NO = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{0,6}\d{8,24})(?![A-Za-z0-9])")

STATUS_TEXT = {
    "pending_payment": ("待付款", "awaiting payment"), "paid": ("已付款，待发货", "paid, not shipped yet"),
    "processing": ("备货中", "being prepared"), "shipped": ("已发货", "shipped"), "delivered": ("已签收", "delivered"),
    "completed": ("已完成", "completed"), "cancelled": ("已取消", "cancelled"), "refunding": ("退款中", "refund in progress"),
    "refunded": ("已退款", "refunded"),
}


def order_number(text: str) -> str | None:
    m = _ORDER_NO.search(normalise(text).upper())
    return m.group(1) if m else None


def asks_about_order(text: str, context: list[str]) -> bool:
    """An order question, or an order number given right after one (the bot asked for it)."""
    t = normalise(text)
    if _ASK.search(t):
        return True
    return bool(order_number(text)) and any(_ASK.search(normalise(c)) for c in context[-1:])


async def answer(adapter, customer_id: str, text: str) -> dict:
    """The bot's reply: {"action", "reason", "text", "cards", "lang", "order_id"}."""
    zh = has_cjk(text)
    number = order_number(text)
    try:
        if number:
            order = await adapter.order(customer_id, number)
            if order is None:
                return _reply("order_not_found", zh, "没有找到订单号 {n} 对应的订单，请核对订单号，或输入“转人工”联系人工客服。"
                              if zh else "I couldn't find an order {n} of yours. Please check the number, or type "
                              "\"agent\" to talk to a person.", n=number)
        else:
            latest = await adapter.orders_of(customer_id, limit=1)
            if not latest:
                return _reply("order_number_needed", zh, "请提供您的订单号，我帮您查询物流信息。" if zh else
                              "Please send me your order number and I'll look it up.")
            order = latest[0]
        tracking = order.tracking if order.tracking and order.tracking.events else \
            await adapter.tracking(customer_id, order.order_id)
    except CommerceUnavailable:
        return {"action": "handoff", "reason": "order_system_unavailable", "lang": "zh" if zh else "en", "cards": [],
                "text": "订单系统暂时无法查询，正在为您转接人工客服。" if zh else
                        "I can't reach the order system right now; connecting you with a person."}
    return {"action": "reply", "reason": "order_status", "lang": "zh" if zh else "en", "order_id": order.order_id,
            "text": describe(order, tracking, zh), "cards": [_card(order, zh)]}


def describe(order: Order, tracking: Tracking | None, zh: bool) -> str:
    status = STATUS_TEXT.get(order.status, (order.status, order.status))[0 if zh else 1]
    if zh:
        lines = [f"您的订单 {order.order_id} 当前状态：{status}。"]
        if tracking and (tracking.carrier or tracking.tracking_no):
            lines.append(f"承运：{tracking.carrier} {tracking.tracking_no}".rstrip())
        if tracking and tracking.events:
            e = tracking.events[0]
            lines.append(f"最新物流（{e.at}）：{e.text}" + (f"，{e.location}" if e.location else ""))
    else:
        lines = [f"Your order {order.order_id} is {status}."]
        if tracking and (tracking.carrier or tracking.tracking_no):
            lines.append(f"Carrier: {tracking.carrier} {tracking.tracking_no}".rstrip())
        if tracking and tracking.events:
            e = tracking.events[0]
            lines.append(f"Latest ({e.at}): {e.text}" + (f", {e.location}" if e.location else ""))
    return "\n".join(lines)


def _card(order: Order, zh: bool) -> dict:
    items = "、".join(i.title for i in order.items[:3]) if zh else ", ".join(i.title for i in order.items[:3])
    title = f"{'订单' if zh else 'Order'} {order.order_id}"
    return {"type": "link", "title": title, "url": "", "image": "", "description": items}


def _reply(reason: str, zh: bool, text: str, **values) -> dict:
    return {"action": "reply", "reason": reason, "lang": "zh" if zh else "en", "text": text.format(**values),
            "cards": []}
