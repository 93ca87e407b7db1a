"""The bot answering "which is better, A or B", "A和B哪个好", "3L和5L电饭煲有什么区别" from the
merchant's own catalogue, through the merchant's commerce adapter (storage/commerce): the two
products side by side (`storage.commerce.base.compare`), as a table in the reply and as plain
text for channels that show only text.

Each of the two mentions ("3L的", "the 5 litre one", a title fragment, a product id) is looked
up with a few catalogue searches at once and scored against every product found (`fit`). Both
resolve to two products → the table; one or both unclear, or both the same product → the
customer picks a pair from the candidates (choices whose id names the pair) or is asked; nothing
of either in the catalogue → None, and the knowledge base answers as before; the merchant's
system down or slower than its timeout → a person takes over. Only that merchant's adapter is
ever asked, so no other merchant's catalogue can show.
"""
from __future__ import annotations

import asyncio
import itertools
import re
import unicodedata

from storage.commerce import CommerceUnavailable, Product
from storage.commerce.base import ID, compare

from . import intents
from .text import has_cjk, normalise, tokens

CHOICE_PREFIX = "compare|"   # no knowledge-base id can start so (ids are A-Z a-z 0-9 _ . -)
MAX_CHOICE_ID = 64           # gateway/protocol.py: TextContent.choice
BUILTIN_BUDGET_S = 2.0       # the built-in store has no timeout setting; the HTTP adapter's timeout_s
MAX_CALLS = 6                # calls to the merchant's system per question (searches, id look-ups), all at once
SEARCH_LIMIT = 10
MAX_MENTION = 40             # characters: a longer "mention" is a sentence, not a product
MAX_PAIRS, MAX_ROWS, MAX_VALUE = 4, 20, 80
# How well a mention fits a product, 0-1 (`fit`): a candidate from CANDIDATE; the product meant
# when it scores RESOLVE or more and no other is within MARGIN. Specs alone ("3L的") fit at
# SPECS_ONLY; specs and words from SPECS_FLOOR (a 3L kettle is not the 3L rice cooker); the other
# mention's words ("3L和5L电饭煲": 电饭煲 for the 3L) add up to CONTEXT_BONUS.
CANDIDATE, RESOLVE, MARGIN = 0.5, 0.6, 0.08
SPECS_ONLY, SPECS_FLOOR, CONTEXT_BONUS = 0.7, 0.4, 0.1

_CUE = re.compile(
    r"哪(个|一个|款|一款|种|台|只)|区别|不同|差别|差异|对比|比较|相比|比起来|(选|买|要|入).{1,30}还是|"
    r"还是.{1,30}(好|划算|合适)|\bwhich\b.{0,30}\b(better|best|recommend|choose|pick|buy|get)\b|"
    r"\bdiffer(ence|ences)?\b|\bcompar(e|ed|ing|ison)\b|\bvs\b|\bversus\b|\bbetter than\b|"
    r"\bshould i (buy|get|choose|pick|go for)\b.+\bor\b", re.I)
_LEAD = re.compile(
    r"^(?:请问|请|麻烦|帮我|帮忙|你好|您好|亲|我想|想|问一下|问下|对比|比较|比一比|比一下|一下|选|买|推荐|please\b|pls\b|"
    r"can you\b|could you\b|compare\b|comparing\b|comparison of\b|is\b|are\b|"
    r"which(?: one)?(?: is|'s| would be) (?:the )?(?:better|best)(?: one)?(?: for [^,:]*)?|"
    r"which (?:one )?(?:should|would|do) (?:i|you) (?:buy|get|choose|pick|recommend)|"
    r"should i (?:buy|get|choose|pick|go for)\b|"
    r"[\s,，:：、]+)+", re.I)
_TAIL = re.compile(
    r"[,，\s]*(?:比[,，\s]*)?(?:哪|谁)|[,，\s]*比[,，\s]*$|有(?:什么|啥|何)|什么区别|之间|"
    r"的?(?:区别|不同|差别|差异|对比|比较)|相比|比起来|怎么选|如何选|"
    r"更?(?:好|划算|合适|值得)(?:一些|一点|些|点)?[呢啊吗呀]?$|"
    r"[,，]?\s*\b(?:which|what|whats|differ|difference|differences|better(?! than)|compared?(?! to| with))\b|"
    r"[?？!！]", re.I)
_SEPARATORS = (" vs. ", " vs ", "vs", " versus ", " compared to ", " compared with ", " better than ", "对比", "还是",
               "或者", " or ", "和", "跟", "与", " and ", "、", "/", "&", " with ", "比")
_EDGE_ZH = re.compile(r"^(?:这个|那个|这款|那款|这台|那台|这|那|选|买|要)+|(?:的|款|个|呢|吗|啊|吧|呀)+$")
_EDGE_EN = re.compile(r"^(?:(?:the|a|an|this|that|these|those|your|is|buy|get)\s+)+|"
                      r"(?:\s+(?:one|ones|model|version))+$", re.I)
_FILLER = frozenset({"one", "model", "version", "product", "item", "型号", "商品", "产品", "东西"})

_UNITS = {"l": "l", "升": "l", "litre": "l", "litres": "l", "liter": "l", "liters": "l", "ltr": "l", "ml": "ml",
          "毫升": "ml", "w": "w", "瓦": "w", "watt": "w", "watts": "w", "kw": "kw", "千瓦": "kw", "kg": "kg",
          "公斤": "kg", "千克": "kg", "g": "g", "克": "g", "寸": "in", "英寸": "in", "inch": "in", "inches": "in",
          '"': "in", "gb": "gb", "tb": "tb", "mah": "mah", "毫安": "mah", "人份": "人", "人": "人", "匹": "匹",
          "cm": "cm", "厘米": "cm", "mm": "mm", "毫米": "mm"}
_ZH_UNIT = {"l": "升", "w": "瓦", "kg": "公斤", "in": "寸"}
_ZH_DIGIT = dict(zip("一两二三四五六七八九十", ["1", "2", "2", "3", "4", "5", "6", "7", "8", "9", "10"]))
_SPEC = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?|[一两二三四五六七八九十])\s*("
                   + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)) + r")(?![a-z])")


# -- the question ------------------------------------------------------------------------------
def _plain(text: str) -> str:
    """NFKC and collapsed spaces, case kept (product ids are case-sensitive)."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", str(text))).strip()


def mentions(text: str) -> tuple[str, str] | None:
    """The two products a comparison question names, as the customer wrote them, or None."""
    t = _plain(text)
    if not _CUE.search(t):
        return None
    between = re.search(r"\bbetween\b(.+)", t, re.I)
    body = between.group(1) if between else _LEAD.sub("", t, count=1)
    tail = _TAIL.search(body, 1)
    body = body[:tail.start()] if tail else body
    for sep in _SEPARATORS:
        at = body.lower().find(sep)
        if at > 0:
            pair = _clean(body[:at]), _clean(body[at + len(sep):])
            if all(0 < len(m) <= MAX_MENTION for m in pair):
                return pair
    return None


def _clean(mention: str) -> str:
    m = mention.strip(" ,，.。:：;；、?？!！\"'“”()（）")
    for _ in range(3):
        m = _EDGE_EN.sub("", _EDGE_ZH.sub("", m.strip())).strip()
    return m


def for_the_bot(text: str) -> bool:
    """Nobody asked for a person and nothing calls for one (a complaint, a hacked account...):
    only then do live answers (orders, comparisons) come before the handover."""
    return not intents.asks_for_human(text) and intents.needs_person(text) is None


def asks_to_compare(text: str) -> bool:
    """A comparison of two products — never when the customer wants a person or needs one."""
    return mentions(text) is not None and for_the_bot(text)


def is_choice(choice: str | None) -> bool:
    return bool(choice) and str(choice).startswith(CHOICE_PREFIX)


def choice_id(lang: str, a: Product, b: Product) -> str:
    return f"{CHOICE_PREFIX}{lang}|{a.product_id}|{b.product_id}"


def _pair_of(choice: str) -> tuple[str, str, str] | None:
    parts = choice[len(CHOICE_PREFIX):].split("|")
    if len(parts) == 3 and parts[0] in ("zh", "en") and all(re.match(ID, p) for p in parts[1:]):
        return parts[0], parts[1], parts[2]
    return None


# -- matching a mention to products ------------------------------------------------------------
def _terms(text: str) -> tuple[frozenset, frozenset]:
    """Specs ("3l", "600w": number and unit, however written) and the words of a text."""
    specs = set()

    def spec(m: re.Match) -> str:
        number = _ZH_DIGIT.get(m.group(1), m.group(1))
        number = number.rstrip("0").rstrip(".") if "." in number else number
        specs.add(number + _UNITS[m.group(2)])
        return " "
    rest = _SPEC.sub(spec, normalise(text))
    words = {w for w in tokens(rest) if w.lstrip("#") not in _FILLER}
    return frozenset(specs), frozenset(words)


def _product_terms(p: Product) -> tuple[frozenset, frozenset]:
    return _terms(" ".join([p.title, p.category, *p.attributes.values(), p.product_id]))


def fit(mention: str, product: Product, context: frozenset = frozenset()) -> float:
    """How well a mention names a product, 0-1: its id exactly → 1; every spec of the mention must
    be the product's (3L is not the 5L); then the share of its words found in the product's title,
    category and attributes."""
    if normalise(mention) == product.product_id.lower():
        return 1.0
    specs, words = _terms(mention)
    p_specs, p_words = _product_terms(product)
    if specs - p_specs:
        return 0.0
    share = len(words & p_words) / len(words) if words else None
    if share is None:
        score = SPECS_ONLY if specs else 0.0
    else:
        score = SPECS_FLOOR + (1 - SPECS_FLOOR) * share if specs else share
    if context and score:
        score += CONTEXT_BONUS * len(context & p_words) / len(context)
    return round(min(score, 1.0), 4)


def resolve(mention: str, pool: list[Product],
            context: frozenset = frozenset()) -> tuple[Product | None, list[Product]]:
    """(the product meant, or None; the best candidates, best first)."""
    ranked = sorted(((fit(mention, p, context), p) for p in pool), key=lambda sp: -sp[0])
    ranked = [(s, p) for s, p in ranked if s >= CANDIDATE]
    if ranked and ranked[0][0] >= RESOLVE and (len(ranked) == 1 or ranked[0][0] - ranked[1][0] >= MARGIN):
        return ranked[0][1], [ranked[0][1]]
    return None, [p for _, p in ranked[:3]]


def _queries(mention: str) -> list[str]:
    """What to search the catalogue for: the mention, its specs as titles write them, its words."""
    specs, words = _terms(mention)
    low = normalise(mention)
    out = [low]
    for s in sorted(specs):
        number, unit = re.match(r"([\d.]+)(.+)", s).groups()
        out += [s] + ([number + _ZH_UNIT[unit]] if unit in _ZH_UNIT else [])
    out += sorted((w for w in words if w[0] not in "#@" and len(w) >= 2 and w in low), key=len, reverse=True)
    return list(dict.fromkeys(out))


async def _pool(adapter, pair: tuple[str, str]) -> list[Product]:
    """Every product the searches for either mention find (a few at once, the two mentions'
    queries taken in turn), and the mentions that look like product ids looked up."""
    ids = [m for m in pair if re.match(ID, m) and re.search(r"[\d_.:-]", m)]
    queries = [q for q in itertools.chain(*itertools.zip_longest(*map(_queries, pair))) if q]
    queries = list(dict.fromkeys(queries))[:MAX_CALLS - len(ids)]
    calls = [_as_list(adapter.product(m)) for m in ids]
    calls += [adapter.search_products(q, limit=SEARCH_LIMIT) for q in queries]
    found = {}
    for products in await asyncio.gather(*calls):
        for p in products:
            found.setdefault(p.product_id, p)
    return list(found.values())


async def _as_list(call) -> list[Product]:
    product = await call
    return [product] if product else []


# -- the reply ---------------------------------------------------------------------------------
def time_budget(settings: dict) -> float:
    """The longest a comparison may take: the merchant's HTTP timeout (its calls run at once)."""
    if settings.get("adapter", "builtin") == "http":
        return float((settings.get("http") or {}).get("timeout_s", 2.0))
    return BUILTIN_BUDGET_S


async def answer(adapter, text: str, choice: str | None = None, budget_s: float = BUILTIN_BUDGET_S) -> dict | None:
    """The bot's reply {"action", "reason", "lang", "text", "cards", …}, or None: not a comparison
    the catalogue knows anything of (the knowledge base answers)."""
    zh = has_cjk(text)
    try:
        return await asyncio.wait_for(_answer(adapter, text, choice, zh), budget_s)
    except (CommerceUnavailable, TimeoutError):
        return {"action": "handoff", "reason": "product_system_unavailable", "lang": "zh" if zh else "en", "cards": [],
                "text": "商品系统暂时无法查询，正在为您转接人工客服。" if zh else
                        "I can't reach the product catalogue right now; connecting you with a person."}


async def _answer(adapter, text: str, choice: str | None, zh: bool) -> dict | None:
    picked = _pair_of(choice) if is_choice(choice) else None
    if picked:  # the customer tapped one of the pairs offered
        zh = picked[0] == "zh"
        a, b = await asyncio.gather(adapter.product(picked[1]), adapter.product(picked[2]))
        return table(a, b, zh) if a and b else _ask(zh, [], "comparison_unclear")
    pair = mentions(text)
    if pair is None:
        return None
    pool = await _pool(adapter, pair)
    (a, a_options), (b, b_options) = _resolve_pair(pair, pool)
    if a and b and a.product_id != b.product_id:
        return table(a, b, zh)
    if a and b:  # both name the same product: with which other one?
        return _ask(zh, _pairs([a], await _alternatives(adapter, a, pool), zh), "comparison_same_product", a)
    if a or b:
        known = a or b
        options = [p for p in (b_options if a else a_options) if p.product_id != known.product_id] or \
            await _alternatives(adapter, known, pool)
        return _ask(zh, _pairs([known], options, zh), "comparison_unclear", known)
    if a_options and b_options:
        return _ask(zh, _pairs(a_options, b_options, zh), "comparison_unclear")
    return None


def _resolve_pair(pair: tuple[str, str], pool: list[Product]) -> list[tuple[Product | None, list[Product]]]:
    """Each mention resolved, the other mention's words as context ("3L和5L电饭煲": the 3L of a
    rice cooker); once one is known, the other is looked for among products of its kind."""
    words = [_terms(m)[1] for m in pair]
    found = [resolve(pair[0], pool, words[1] - words[0]), resolve(pair[1], pool, words[0] - words[1])]
    known = [p for p, _ in found if p]
    if len(known) == 1:
        kind = _terms(known[0].category)[1]
        found = [f if f[0] else resolve(pair[i], pool, (words[1 - i] - words[i]) | kind) for i, f in enumerate(found)]
    return found


async def _alternatives(adapter, known: Product, pool: list[Product]) -> list[Product]:
    """Other products of the known one's kind: among those found already, else searched by its category."""
    def same(products: list[Product]) -> list[Product]:
        return [p for p in products if p.product_id != known.product_id and p.category == known.category]
    found = same(pool)
    if found or not known.category:
        return found
    return same(await adapter.search_products(known.category, limit=SEARCH_LIMIT))


def _pairs(left: list[Product], right: list[Product], zh: bool) -> list[tuple[Product, Product]]:
    out = []
    for a, b in itertools.product(left, right):
        ids = {a.product_id, b.product_id}
        if len(ids) == 2 and ids not in [{x.product_id, y.product_id} for x, y in out] \
                and len(choice_id("zh" if zh else "en", a, b)) <= MAX_CHOICE_ID:
            out.append((a, b))
    return out[:MAX_PAIRS]


def _ask(zh: bool, pairs: list, reason: str, known: Product | None = None) -> dict:
    """Which two? As choices of pairs when there are some, else as a question."""
    lang = "zh" if zh else "en"
    if reason == "comparison_same_product":
        text = f"您说的两款都是「{known.title}」。" if zh else f"Both of those are the {known.title}. "
        text += "想和哪款比较呢？" if zh else "Which one should I compare it with?"
    elif known is not None:
        text = f"我找到了「{known.title}」，想和哪款比较呢？" if zh else \
            f"I found the {known.title}. Compare it with which one?"
    else:
        text = "您想对比哪两款商品呢？" if zh else "Which two products would you like to compare?"
    if pairs:
        joint = " 和 " if zh else " vs "
        return {"action": "choices", "reason": reason, "lang": lang, "text": text, "cards": [],
                "candidates": [{"id": choice_id(lang, a, b), "question": f"{a.title}{joint}{b.title}"[:200],
                                "score": 1.0} for a, b in pairs]}
    text += "请告诉我商品名称或编号。" if zh else " Please tell me the product names or numbers."
    return {"action": "reply", "reason": reason, "lang": lang, "text": text, "cards": []}


def table(a: Product, b: Product, zh: bool) -> dict:
    """The comparison: a short text with the table in plain text, the two product cards, and the
    table itself (`comparison`) for channels that draw it."""
    rows = [{"name": n, "a": x[:MAX_VALUE], "b": y[:MAX_VALUE]} for n, x, y in compare(a, b)["rows"][:MAX_ROWS]]
    differ = [r["name"] for r in rows if r["a"] != r["b"]]
    sep = "：" if zh else ": "
    lines = ["为您对比这两款商品：" if zh else "Here are the two side by side:",
             f"A{sep}{a.title}", f"B{sep}{b.title}", *(f"{r['name']}{sep}{r['a']} ｜ {r['b']}" for r in rows)]
    if zh:
        lines.append(f"主要区别：{'、'.join(differ)}。" if differ else "两款列出的参数相同。")
    else:
        lines.append(f"They differ in: {', '.join(differ)}." if differ else "Their listed details are the same.")
    cards = [product_card(a), product_card(b)]
    return {"action": "reply", "reason": "product_comparison", "lang": "zh" if zh else "en", "text": "\n".join(lines),
            "cards": cards, "comparison": {"products": cards, "rows": rows},
            "product_ids": [a.product_id, b.product_id]}


def product_card(p: Product) -> dict:
    """A product card, the shape of a `product` message (gateway/protocol.py ProductContent)."""
    return {"type": "product", "product_id": p.product_id, "title": p.title[:200], "price": p.price,
            "currency": p.currency, "url": p.url or None, "image_url": p.image_url or None}
