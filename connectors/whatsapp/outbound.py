"""What peakdesk's outbound messages look like as Cloud API message objects (the part after
"messaging_product", "recipient_type" and "to"). Pure: media are uploaded by the connector.

- `text` → type "text" (preview_url off); its bot `choices` become reply buttons (up to 3 of at
  most 20 characters) or a list (up to 10 rows; a row title holds 24 characters, so a longer
  question rides whole in the row's description and comes back from there); `cards` are
  appended as lines of links.
- `rich` → text with WhatsApp's own marks (*bold* _italic_ ~strike~ ```code```).
- `emoji`, `product`, `order` → text.
- `image`/`audio`/`video`/`file` → the WhatsApp type that takes that file, else a document.
"""
from __future__ import annotations

from html.parser import HTMLParser

from connectors.base import Outbound, SendFailed

TEXT_MAX = 4096                  # a text message's body
INTERACTIVE_BODY_MAX = 1024
BUTTON_TITLE_MAX, BUTTONS_MAX, BUTTON_ID_MAX = 20, 3, 256
ROW_TITLE_MAX, ROW_DESCRIPTION_MAX, ROWS_MAX, ROW_ID_MAX = 24, 72, 10, 200
LIST_BUTTON = "选择 Choose"      # the list's opening button: at most 20 characters
# Which files each WhatsApp type takes, and how big (Cloud API "Supported media types").
MEDIA = {
    "image": ({"image/jpeg", "image/png"}, 5 * 1024 * 1024),
    "audio": ({"audio/aac", "audio/mp4", "audio/mpeg", "audio/amr", "audio/ogg"}, 16 * 1024 * 1024),
    "video": ({"video/mp4", "video/3gpp"}, 16 * 1024 * 1024),
}


def text_body(message: Outbound) -> dict:
    content, kind = message.content, message.kind
    if kind == "text":
        return _text_with_choices(_text_with_cards(str(content.get("text", "")), content.get("cards")),
                                  content.get("choices"))
    if kind == "rich":
        return _text(_Marks.convert(str(content.get("html", ""))))
    if kind == "emoji":
        return _text(str(content.get("emoji", "")))
    if kind == "product":
        return _text(_product(content))
    if kind == "order":
        return _text(_order(content))
    raise SendFailed(f"a {kind!r} message can't be sent on WhatsApp", retry=False)


def media_type(kind: str, mime: str, size: int) -> str:
    """The WhatsApp type to send a file as: its own when WhatsApp takes it, else "document"."""
    wa_type = {"image": "image", "audio": "audio", "video": "video"}.get(kind, "document")
    accepted, limit = MEDIA.get(wa_type, (None, 0))
    return wa_type if accepted and mime in accepted and size <= limit else "document"


def _text(body: str) -> dict:
    body = body.strip()
    if not body:
        raise SendFailed("the message is empty: WhatsApp sends no empty text", retry=False)
    return {"type": "text", "text": {"body": body[:TEXT_MAX], "preview_url": False}}


def _text_with_cards(text: str, cards: object) -> str:
    links = [f"🔗 {c.get('title', '')} {c.get('url', '')}".rstrip() for c in cards or []
             if isinstance(c, dict) and c.get("url")] if isinstance(cards, list) else []
    return "\n".join([text, *links]) if links else text


def _text_with_choices(text: str, choices: object) -> dict:
    rows = [c for c in choices or [] if isinstance(c, dict) and c.get("id") and c.get("question")] \
        if isinstance(choices, list) else []
    if not rows:
        return _text(text)
    if len(text) > INTERACTIVE_BODY_MAX or len(rows) > ROWS_MAX or any(len(str(c["id"])) > ROW_ID_MAX for c in rows):
        return _text("\n".join([text, *(f"{n}. {c['question']}" for n, c in enumerate(rows, 1))]))
    if len(rows) <= BUTTONS_MAX and all(len(str(c["question"])) <= BUTTON_TITLE_MAX for c in rows):
        action = {"buttons": [{"type": "reply", "reply": {"id": str(c["id"]), "title": str(c["question"])}}
                              for c in rows]}
        return {"type": "interactive", "interactive": {"type": "button", "body": {"text": text}, "action": action}}
    return {"type": "interactive", "interactive": {"type": "list", "body": {"text": text}, "action": {
        "button": LIST_BUTTON, "sections": [{"rows": [_row(c) for c in rows]}]}}}


def _row(choice: dict) -> dict:
    question = str(choice["question"])
    row = {"id": str(choice["id"]), "title": question}
    if len(question) > ROW_TITLE_MAX:
        row["title"] = question[:ROW_TITLE_MAX - 1] + "…"
        row["description"] = question[:ROW_DESCRIPTION_MAX]
    return row


def _product(p: dict) -> str:
    price = " ".join(str(p[k]) for k in ("price", "currency") if p.get(k))
    return "\n".join(str(x) for x in (f"🛒 {p.get('title', '')}", price, p.get("url")) if x)


def _order(o: dict) -> str:
    items = [f"- {i.get('title', '')} × {i.get('qty', 1)}" for i in o.get("items") or [] if isinstance(i, dict)]
    total = " ".join(str(o[k]) for k in ("total", "currency") if o.get(k))
    return "\n".join([f"📦 订单 Order {o.get('order_id', '')}: {o.get('status', '')}", *items, total]).strip()


class _Marks(HTMLParser):
    """Sanitised rich text (docs/protocol.md `rich`) in WhatsApp's formatting marks."""
    MARKS = {"b": "*", "strong": "*", "i": "_", "em": "_", "s": "~", "code": "`", "pre": "```"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.links: list[str] = []

    @classmethod
    def convert(cls, html: str) -> str:
        parser = cls()
        parser.feed(html)
        parser.close()
        return "".join(parser.out)

    def handle_starttag(self, tag, attrs):
        if tag in self.MARKS:
            self.out.append(self.MARKS[tag])
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self.out.append("\n• ")
        elif tag == "a":
            self.links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag):
        if tag in self.MARKS:
            self.out.append(self.MARKS[tag])
        elif tag in ("p", "ul", "ol", "blockquote", "pre"):
            self.out.append("\n")
        elif tag == "a" and self.links and (href := self.links.pop()):
            self.out.append(f" ({href})")

    def handle_data(self, data):
        self.out.append(data)
