"""E-commerce concepts shared by Chinese and English: 邮费 / 运费 / postage / shipping fee are one
concept, and so are 乌鲁木齐 / 新疆 / Xinjiang ("a remote region"). The lexicon ships as data
(`data/concepts.json`) and is written for online shops in general, not for one merchant: a
concept token joins a text's BM25 tokens, so a query matches a phrasing or an answer that
names the same thing in other words or the other language.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

LEXICON_FILE = Path(__file__).parent / "data" / "concepts.json"
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _pattern(forms: list[str]) -> re.Pattern:
    """Chinese forms match anywhere; English ones as whole words, with an ending (s, es, ed, d,
    ing) unless they are three letters or fewer ("cod" is not "codes"). A form "re:..." is a
    regular expression, for the few that need a context ("re:(?<!分)批发": not 分批发货)."""
    raw = [f[3:] for f in forms if f.startswith("re:")]
    forms = [f for f in forms if not f.startswith("re:")]
    zh = [re.escape(f) for f in forms if _CJK.search(f)]
    en = [re.escape(f.lower()).replace(r"\ ", r"\s+").replace("'", "['’]?") for f in forms if not _CJK.search(f)]
    longer, short = [f for f in en if len(f) > 3], [f for f in en if len(f) <= 3]
    parts = raw[:]
    if zh:
        parts.append("|".join(sorted(zh, key=len, reverse=True)))
    if longer:
        parts.append(r"(?<![a-z0-9])(?:" + "|".join(sorted(longer, key=len, reverse=True)) + r")(?:s|es|ed|d|ing)?(?![a-z0-9])")
    if short:
        parts.append(r"(?<![a-z0-9])(?:" + "|".join(sorted(short, key=len, reverse=True)) + r")(?![a-z0-9])")
    return re.compile("|".join(parts))


@lru_cache(maxsize=1)
def _lexicon() -> tuple[tuple[str, re.Pattern], ...]:
    data = json.loads(LEXICON_FILE.read_text(encoding="utf-8"))
    return tuple(("@" + name, _pattern(forms)) for name, forms in data.items()
                 if not name.startswith("_") and forms)


# a quantity of twenty or more of something (not of days, money or weight): a bulk order
_BULK = re.compile(
    r"(?<![\d.])(?:[2-9]\d|[1-9]\d{2,})\s*(?:台|个|件|套|箱|份|只|把|部|副|units?\b|pcs\b|pieces\b|sets?\b|"
    r"(?!(?:days|weeks|months|years|hours|minutes|mins|yuan|rmb|dollars|euros|pounds|kg|grams|orders|times)\b)"
    r"(?:[a-z-]+\s+)?[a-z]+s\b)")


def concepts(normalised_text: str) -> list[str]:
    """The concept tokens named in an already normalised text, in lexicon order."""
    found = [token for token, pattern in _lexicon() if pattern.search(normalised_text)]
    if _BULK.search(normalised_text) and "@bulk" not in found:
        found.append("@bulk")
    return found
