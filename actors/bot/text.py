"""Text handling shared by retrieval, intents and sentiment: normalising Chinese and English
alike, and cutting them into the tokens BM25 counts (words, bigrams and shared e-commerce
concept tokens from `concepts.py`).

Chinese runs are cut by jieba (search mode, so both 退货 and 七天无理由 count) plus character
bigrams, which keep a match when customers and the knowledge base segment differently
(退钱 / 退款). Latin runs become lower-cased, stemmed words (refunds, refunded -> refund).
"""
from __future__ import annotations

import logging
import re
import threading
import unicodedata
from functools import lru_cache

import jieba
import snowballstemmer

from .concepts import concepts

jieba.setLogLevel(logging.WARNING)
_JIEBA_LOCK = threading.Lock()
_STEM = snowballstemmer.stemmer("english")

CONCEPT_REPEAT = 2
_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"[{_CJK}]+|[a-z0-9]+(?:['’][a-z]+)?")
_IS_CJK = re.compile(rf"[{_CJK}]")

# Words that carry no intent in a customer's question (both languages). Kept short on purpose:
# "not", "no", "how", "when", "where" do carry intent here (where is my order / when will it ship).
STOP_EN = frozenset("""a an the i me my we our you your it its is are was were be been am do does did
to of in on at for with and or but so if this that these those there here can could would should will
shall may might pls please plz hi hello hey dear thanks thank u ur im i'm just also then any some
about from by as into up out what""".split())
STOP_ZH = frozenset("""的 了 吗 呢 吧 啊 呀 哦 嗯 亲 么 嘛 请问 你好 您好 在吗 在不在 我 我们 你 你们 您 他 她 它 是 有 就 都 也
还 和 跟 与 这个 那个 一下 谢谢 麻烦 请 想 要 能 可以 怎么 怎样 如何 什么 吧 哈 哈哈""".split())


def normalise(text: str) -> str:
    """NFKC (full-width letters and digits to half-width), lower case, collapsed spaces."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return re.sub(r"\s+", " ", text).strip()


def has_cjk(text: str) -> bool:
    return bool(_IS_CJK.search(text))


def _cut(run: str) -> list[str]:
    with _JIEBA_LOCK:  # jieba's lazy initialisation is not thread-safe
        return jieba.lcut_for_search(run)


@lru_cache(maxsize=8192)
def tokens(text: str) -> tuple[str, ...]:
    """BM25 tokens of `text` (normalised first): content words of both languages, plus
    character bigrams of Chinese runs."""
    out: list[str] = []
    norm = normalise(text)
    for run in _RUNS.findall(norm):
        if _IS_CJK.match(run):
            words = [w for w in _cut(run) if w not in STOP_ZH]
            out.extend(words)
            out.extend("#" + run[i:i + 2] for i in range(len(run) - 1) if not _stop_bigram(run[i:i + 2]))
            if len(run) == 1 and run not in STOP_ZH:
                out.append(run)
        elif run not in STOP_EN:
            out.append(_STEM.stemWord(run.replace("’", "'")))
    # shared concept tokens (邮费 / postage -> @shipfee), counted twice: one concept named in other
    # words or the other language should weigh like a word matched exactly (measured: BM25 top-1
    # on the development set 0.57 -> 0.74 with the lexicon, 0.68 with it counted once)
    out.extend(concepts(norm) * CONCEPT_REPEAT)
    return tuple(out)


# particles and pronouns: a bigram holding one says nothing (的电, 货吗, 我买)
_STOP_CHARS = frozenset("的了吗呢吧啊呀哦嗯么嘛我你您他她它们这那是就都也和跟与请想能")


def _stop_bigram(bigram: str) -> bool:
    return bigram in STOP_ZH or any(c in _STOP_CHARS for c in bigram)


def warm_up() -> None:
    """Load jieba's dictionary now (about 0.7 s) rather than on a customer's first message."""
    with _JIEBA_LOCK:
        jieba.initialize()
