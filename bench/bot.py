"""The bot's speed on this machine's CPU (one thread, as a bot worker runs): per-query latency
of the decision on a knowledge base and queries file, and a worker's throughput when a host
sends it batches. Prints a table; asserts nothing about time.

    python -m bench.bot [--kb tests/data/bot/kb.json] [--queries tests/data/bot/queries.jsonl]
                        [--repeat 5] [--batch 32] [--kb-copies 20]

--kb-copies also measures a knowledge base that many times larger (entries copied with new ids,
phrasings varied by a suffix) to show how latency grows with the size of a merchant's KB.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from actors.bot.engine import Bot  # noqa: E402
from actors.bot.evaluate import load_kb, load_queries  # noqa: E402
from actors.bot.index import KBIndex  # noqa: E402
from actors.bot.kb import Entry  # noqa: E402


def latencies(bot: Bot, rows: list[dict], repeat: int) -> np.ndarray:
    bot.decide("warm up 预热")
    times = []
    for _ in range(repeat):
        for row in rows:
            t0 = time.perf_counter()
            bot.decide(row["query"], row["context"])
            times.append((time.perf_counter() - t0) * 1000)
    return np.asarray(times)


def larger(entries: list[Entry], copies: int) -> list[Entry]:
    out = []
    for i in range(copies):
        for e in entries:
            tag = "" if i == 0 else f" #{i}"
            out.append(e.model_copy(update={"id": f"{e.id}-{i}", "question": e.question + tag,
                                            "alternatives": [a + tag for a in e.alternatives]}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kb", type=Path, default=Path("tests/data/bot/kb.json"))
    ap.add_argument("--queries", type=Path, default=Path("tests/data/bot/queries.jsonl"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--kb-copies", type=int, default=20)
    a = ap.parse_args()
    index = load_kb(a.kb)
    rows = load_queries(a.queries, {e.id for e in index.entries})
    print(f"{'knowledge base':<28}{'queries':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'queries/s':>11}")
    for label, idx in (("dev set", index), (f"x{a.kb_copies} entries", None)):
        if idx is None:
            t0 = time.perf_counter()
            idx = KBIndex(larger(index.entries, a.kb_copies))
            label = f"{len(idx)} entries (built {time.perf_counter() - t0:.1f}s)"
        t = latencies(Bot(idx), rows, a.repeat)
        p50, p90, p99 = np.percentile(t, [50, 90, 99])
        print(f"{label:<28}{len(t):>9}{p50:>9.2f}{p90:>9.2f}{p99:>9.2f}{t.max():>9.2f}{1000 / t.mean():>11.0f}")


if __name__ == "__main__":
    main()
