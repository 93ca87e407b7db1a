"""Hybrid retrieval over one merchant's knowledge base.

Every phrasing of every entry (its question and alternatives) is a document. A query is scored
against each entry by three signals, each in [0, 1]:
- `sem`: the best cosine between the query's sentence embedding and the entry's phrasings;
- `bm25`: BM25 (jieba words + Chinese bigrams, stemmed English words) of the best phrasing,
  relative to the best BM25 of any entry — it ranks;
- `cover`: how much of the query's IDF mass the best phrasing contains — it says whether the
  query is *explained* by the entry at all, which keeps the confidence comparable between
  knowledge bases of different sizes, where raw BM25 is not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rank_bm25 import BM25Okapi

from . import embed
from .kb import Entry
from .text import tokens

W_SEM, W_BM25, W_COVER = 0.6, 0.15, 0.25


@dataclass(frozen=True)
class Candidate:
    entry: Entry
    score: float
    sem: float
    bm25: float
    cover: float

    def brief(self) -> dict:
        return {"id": self.entry.id, "question": self.entry.question, "score": round(self.score, 4)}


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
        postings: dict[str, list[int]] = {}
        for d, toks in enumerate(self.doc_tokens):
            for t in set(toks):
                postings.setdefault(t, []).append(d)
        self.postings = {t: np.asarray(ds, dtype=np.int64) for t, ds in postings.items()}
        self.doc_entry_arr = np.asarray(self.doc_entry, dtype=np.int64)
        self.bm25 = BM25Okapi([list(d) or ["\0"] for d in self.doc_tokens]) if texts else None
        n = max(len(texts), 1)
        self.idf = {t: math.log(1 + n / len(ds)) for t, ds in self.postings.items()}
        self.idf_unknown = math.log(1 + n)  # a word no phrasing has: as rare as can be
        self.vectors = vectors if vectors is not None else embed.encode_many(texts)
        self.by_id = {e.id: e for e in entries}

    def entry(self, entry_id: str) -> Entry | None:
        return self.by_id.get(entry_id)

    def __len__(self) -> int:
        return len(self.entries)

    def search(self, text: str, vector: np.ndarray | None = None, k: int = 5) -> list[Candidate]:
        """The best `k` entries for `text`, best first."""
        if not self.entries:
            return []
        q_tokens = tokens(text)
        if vector is None:
            vector = embed.encode([text])[0]
        sem_docs = self.vectors @ vector
        n = len(self.entries)
        sem = np.full(n, -1.0, dtype=np.float32)
        np.maximum.at(sem, self.doc_entry_arr, sem_docs)
        bm = np.zeros(n, dtype=np.float64)
        cover = np.zeros(n, dtype=np.float64)
        if q_tokens:
            raw = self.bm25.get_scores(list(q_tokens))
            np.maximum.at(bm, self.doc_entry_arr, raw)
            top = bm.max()
            bm = bm / top if top > 0 else bm
            weights = {t: self.idf.get(t, self.idf_unknown) for t in set(q_tokens)}
            total = sum(weights.values())
            cover_docs = np.zeros(len(self.texts), dtype=np.float64)
            for t, w in weights.items():
                docs = self.postings.get(t)
                if docs is not None:
                    cover_docs[docs] += w / total
            np.maximum.at(cover, self.doc_entry_arr, cover_docs)
        score = W_SEM * np.clip(sem, 0, 1) + W_BM25 * bm + W_COVER * cover
        order = np.argsort(-score)[:k]
        return [Candidate(self.entries[i], float(score[i]), float(sem[i]), float(bm[i]), float(cover[i]))
                for i in order]
