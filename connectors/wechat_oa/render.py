"""peakdesk message kinds WeChat has no card for, written as the text of a WeChat text message:
rich text without its tags (links as "text (url)"), an emoji, a product, an order."""
from __future__ import annotations

from html.parser import HTMLParser

_BREAKS = {"br", "p", "li", "ul", "ol", "pre", "blockquote"}


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.href = ""

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.href = dict(attrs).get("href") or ""
        elif tag == "li":
            self.parts.append("\n• ")
        elif tag in _BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag == "a" and self.href:
            self.parts.append(f" ({self.href})")
            self.href = ""
        elif tag in ("p", "ul", "ol", "pre", "blockquote"):
            self.parts.append("\n")

    def handle_data(self, data):
        self.parts.append(data)


def rich_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    return "\n".join(line for line in lines if line)


def product_text(p: dict) -> str:
    price = f"{p.get('price', '')} {p.get('currency', '')}".strip()
    return "\n".join(str(x) for x in (p.get("title"), price, p.get("url")) if x)


def order_text(o: dict) -> str:
    head = f"订单 Order {o.get('order_id', '')}: {o.get('status', '')}".strip()
    items = [f"• {i.get('title', '')} × {i.get('qty', 1)}" for i in o.get("items") or [] if isinstance(i, dict)]
    total = f"{o.get('total', '')} {o.get('currency', '')}".strip()
    return "\n".join([head, *items] + ([f"合计 Total: {total}"] if total else []))


def as_text(kind: str, content: dict) -> str:
    if kind == "text":
        return str(content.get("text") or "")
    if kind == "emoji":
        return str(content.get("emoji") or "")
    if kind == "rich":
        return rich_text(str(content.get("html") or ""))
    if kind == "product":
        return product_text(content)
    return order_text(content)


TEXT_KINDS = {"text", "emoji", "rich", "product", "order"}
