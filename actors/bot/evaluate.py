"""`peakdesk bot eval` and `peakdesk bot sentiment`: how well the bot does on a merchant's own
questions, before the merchant turns it on.

Queries file (JSON lines): {"query": ..., "expected": "<entry id>" | null} — null means a person
should take it. Optional: "context": [earlier customer messages] for a follow-up, or
"session": "<name>", which makes consecutive lines of the same session one conversation.

top1_accuracy: of the queries with an expected entry, the share where the bot's first entry
(the one it answered with, or the first of its choices) is that entry and it did not hand
over. handoff_precision / recall: of the bot's handovers, the share that should have been one;
of the queries that should have been, the share handed over.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from . import sentiment
from .config import BotConfig
from .engine import Bot
from .index import KBIndex
from .kb import KBError, from_csv, from_json


class EvalInputError(ValueError):
    """A queries or sentiment file that can't be read; names the file, line and field."""


def load_kb(path: Path) -> KBIndex:
    data = path.read_bytes()
    try:
        entries = from_csv(data) if path.suffix.lower() == ".csv" else from_json(data)
    except KBError as exc:
        raise EvalInputError(f"{path}: {exc}") from None
    return KBIndex(entries)


def _lines(path: Path) -> list[tuple[int, dict]]:
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise EvalInputError(f"{path}:{n}: not valid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise EvalInputError(f"{path}:{n}: each line must be a JSON object")
        out.append((n, row))
    return out


def load_queries(path: Path, known: set[str]) -> list[dict]:
    rows, history = [], {}
    for n, row in _lines(path):
        query, expected = row.get("query"), row.get("expected", "missing")
        if not isinstance(query, str) or not query.strip():
            raise EvalInputError(f"{path}:{n}: query: must be a non-empty string")
        if expected == "missing" or (expected is not None and not isinstance(expected, str)):
            raise EvalInputError(f"{path}:{n}: expected: must be an entry id or null")
        if expected is not None and expected not in known:
            raise EvalInputError(f"{path}:{n}: expected: {expected!r} is not an entry of the knowledge base")
        context = row.get("context", [])
        if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
            raise EvalInputError(f"{path}:{n}: context: must be a list of strings")
        session = row.get("session")
        if session is not None:
            context = context or history.get(str(session), [])
            history[str(session)] = [*history.get(str(session), []), query]
        rows.append({"line": n, "query": query, "expected": expected, "context": context})
    if not rows:
        raise EvalInputError(f"{path}: no queries")
    return rows


def evaluate(index: KBIndex, rows: list[dict], config: BotConfig | None = None) -> dict:
    bot = Bot(index, config)
    bot.decide("warm up 预热")  # load the models before timing anything
    answerable = handoffs = correct = true_handoffs = should = 0
    times, mistakes = [], []
    for row in rows:
        d = bot.decide(row["query"], row["context"])
        times.append(d.ms)
        handed = d.action == "handoff"
        handoffs += handed
        if row["expected"] is None:
            should += 1
            true_handoffs += handed
            ok = handed
        else:
            answerable += 1
            ok = not handed and d.top_id == row["expected"]
            correct += ok
        if not ok:
            mistakes.append({"line": row["line"], "query": row["query"], "expected": row["expected"],
                             "got": None if handed else d.top_id, "action": d.action, "reason": d.reason,
                             "score": round(d.score, 3)})
    return {
        "queries": len(rows), "top1_accuracy": _ratio(correct, answerable),
        "handoff_precision": _ratio(true_handoffs, handoffs), "handoff_recall": _ratio(true_handoffs, should),
        "p50_ms": round(float(np.percentile(times, 50)), 2), "p99_ms": round(float(np.percentile(times, 99)), 2),
        "answerable": answerable, "should_hand_over": should, "handed_over": handoffs, "mistakes": mistakes,
    }


def evaluate_sentiment(path: Path) -> dict:
    rows = []
    for n, row in _lines(path):
        if not isinstance(row.get("text"), str) or row.get("label") not in sentiment.LABELS:
            raise EvalInputError(f"{path}:{n}: each line must be {{\"text\": ..., \"label\": angry|neutral|happy}}")
        rows.append(row)
    if not rows:
        raise EvalInputError(f"{path}: no messages")
    model = sentiment.model()
    from . import embed

    texts = [r["text"] for r in rows]
    predicted = [sentiment.LABELS[i] for i in model.probabilities(texts, embed.encode_many(texts)).argmax(axis=1)]
    hits = [p == r["label"] for p, r in zip(predicted, rows)]
    angry_true = [r["label"] == "angry" for r in rows]
    angry_pred = [p == "angry" for p in predicted]
    tp = sum(a and b for a, b in zip(angry_true, angry_pred))
    return {"messages": len(rows), "accuracy": _ratio(sum(hits), len(rows)),
            "angry_precision": _ratio(tp, sum(angry_pred)), "angry_recall": _ratio(tp, sum(angry_true)),
            "mistakes": [{"text": r["text"], "label": r["label"], "got": p}
                         for p, r, ok in zip(predicted, rows, hits) if not ok]}


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 1.0
