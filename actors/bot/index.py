"""Hybrid retrieval over one merchant's knowledge base.

Every phrasing of every entry (its question and alternatives) is a document. A query is scored
against each entry by five signals, each on a scale that does not depend on the knowledge base:
- `sem`: the best cosine between the query's sentence embedding and the entry's phrasings;
- `ans`: the cosine between the query and the entry's answer (the encoder is trained on
  question -> answer pairs, so the answer catches what the phrasings do not say);
- `bm25`: BM25 (jieba words + Chinese bigrams, stemmed English words, concept tokens) of the
  best phrasing, relative to the best BM25 of any entry — a small tie-breaker for ranking;
- `cover`: the IDF-weighted share of the query's e-commerce concepts (`concepts.py`: 邮费 /
  postage -> one concept) that the entry's phrasings name;
- `cprec`: the IDF-weighted share of the entry's own concepts that the query names.

The score is a fixed linear mix of them (see W below), in about [0, 1]; thresholds on it carry
over between knowledge bases because every signal is a cosine or a share.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
from rank_bm25 import BM25Okapi

from . import embed
from .concepts import concepts
from .kb import Entry
from .text import normalise, tokens

# Weights of sem, ans, bm25, cover, cprec. Obtained by fitting a listwise softmax (one weight per
# signal, L2 1e-2) on the stand-alone questions of the development set and normalising to sum 1;
# fitted on either random half, the other half scores 0.90 top-1 (0.90 fitted on all).
W_SEM, W_ANS, W_BM25, W_COVER, W_CPREC = 0.37, 0.40, 0.03, 0.12, 0.08

_ANSWER_CACHE: dict[str, np.ndarray] = {}   # answer text -> embedding: a rebuild embeds only new answers
_ANSWER_CACHE_MAX = 50_000
_answer_lock = threading.Lock()


def _answer_vectors(answers: list[str]) -> np.ndarray:
    with _answer_lock:
        missing = [a for a in dict.fromkeys(answers) if a not in _ANSWER_CACHE]
        if len(_ANSWER_CACHE) + len(missing) > _ANSWER_CACHE_MAX:
            _ANSWER_CACHE.clear()
            missing = list(dict.fromkeys(answers))
        for a, v in zip(missing, embed.encode_many(missing)):
            _ANSWER_CACHE[a] = v
        return np.vstack([_ANSWER_CACHE[a] for a in answers]) if answers else embed.encode([])


@dataclass(frozen=True)
class Candidate:
    entry: Entry
    score: float
    sem: float
    bm25: float
    cover: float
    ans: float = 0.0
    cprec: float = 0.0

    def brief(self) -> dict:
        return {"id": self.entry.id, "question": self.entry.question, "score": round(self.score, 4)}


@dataclass
class Scores:
    """Every entry's signals for one query, in entry order."""
    score: np.ndarray
    sem: np.ndarray
    ans: np.ndarray
    bm25: np.ndarray
    cover: np.ndarray
    cprec: np.ndarray


class KBIndex:
    def __init__(self, entries: list[Entry], vectors: np.ndarray | None = None):
        """`vectors`: the phrasings' embeddings, if already known (a cache), in phrasing order."""
        self.entries = entries
        self.doc_entry: list[int] = []
        texts: list[str] = []
        for i, e in enumerate(entries):
            for p in e.phrasings():
                texts.append(p)
                self.doc_entry.append(i)
        self.texts = texts
        self.doc_tokens = [tokens(t) for t in texts]
        self.doc_entry_arr = np.asarray(self.doc_entry, dtype=np.int64)
        self.bm25 = BM25Okapi([list(d) or ["\0"] for d in self.doc_tokens]) if texts else None
        self.vectors = vectors if vectors is not None else embed.encode_many(texts)
        self.answer_vectors = _answer_vectors([e.answer for e in entries])
        # concepts each entry's phrasings name, and how rare each concept is among entries
        self.entry_concepts: list[frozenset[str]] = [frozenset() for _ in entries]
        found: list[set[str]] = [set() for _ in entries]
        for d, t in enumerate(texts):
            found[self.doc_entry[d]].update(concepts(normalise(t)))
        self.entry_concepts = [frozenset(f) for f in found]
        df: dict[str, int] = {}
        for f in found:
            for c in f:
                df[c] = df.get(c, 0) + 1
        n = max(len(entries), 1)
        self.concept_idf = {c: math.log(1 + n / k) for c, k in df.items()}
        self.entry_concept_mass = np.array([sum(self.concept_idf[c] for c in f) for f in found], dtype=np.float64)
        self.by_id = {e.id: e for e in entries}

    def entry(self, entry_id: str) -> Entry | None:
        return self.by_id.get(entry_id)

    def __len__(self) -> int:
        return len(self.entries)

    def scores(self, text: str, vector: np.ndarray | None = None) -> Scores:
        """Every entry's score and signals for `text` (its embedding `vector`, if known)."""
        n = len(self.entries)
        if vector is None:
            vector = embed.encode([text])[0]
        sem = np.full(n, -1.0, dtype=np.float64)
        np.maximum.at(sem, self.doc_entry_arr, (self.vectors @ vector).astype(np.float64))
        ans = (self.answer_vectors @ vector).astype(np.float64)
        bm = np.zeros(n, dtype=np.float64)
        q_tokens = tokens(text)
        if q_tokens and self.bm25 is not None:
            np.maximum.at(bm, self.doc_entry_arr, self.bm25.get_scores(list(q_tokens)))
            top = bm.max()
            bm = bm / top if top > 0 else bm
        cover = np.zeros(n, dtype=np.float64)
        cprec = np.zeros(n, dtype=np.float64)
        named = [c for c in dict.fromkeys(concepts(normalise(text))) if c in self.concept_idf]
        if named:
            total = sum(self.concept_idf[c] for c in named)
            for i, f in enumerate(self.entry_concepts):
                shared = sum(self.concept_idf[c] for c in named if c in f)
                if shared:
                    cover[i] = shared / total
                    cprec[i] = shared / self.entry_concept_mass[i]
        score = (W_SEM * np.clip(sem, 0, 1) + W_ANS * np.clip(ans, 0, 1) + W_BM25 * bm + W_COVER * cover
                 + W_CPREC * cprec)
        return Scores(score, sem, ans, bm, cover, cprec)

    def candidates(self, s: Scores, score: np.ndarray | None = None, k: int = 5) -> list[Candidate]:
        """The best `k` entries by `score` (default: `s.score`), best first."""
        score = s.score if score is None else score
        order = np.argsort(-score, kind="stable")[:k]
        return [Candidate(self.entries[i], float(score[i]), float(s.sem[i]), float(s.bm25[i]), float(s.cover[i]),
                          float(s.ans[i]), float(s.cprec[i])) for i in order]

    def search(self, text: str, vector: np.ndarray | None = None, k: int = 5) -> list[Candidate]:
        """The best `k` entries for `text`, best first."""
        if not self.entries:
            return []
        return self.candidates(self.scores(text, vector), k=k)
