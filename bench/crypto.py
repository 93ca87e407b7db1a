"""What encryption at rest costs on the hot path (storage/crypto.py): sealing and opening event
payloads, snapshots and log entries, and a host round's whole commit encoding with and without it.
Prints a table; asserts nothing about time.

    python -m bench.crypto [--n 20000]

Starts its own Redis under a temporary directory (the keys live there) and a throwaway master key.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import msgpack
import redis

from bench import throwaway_master_key
from storage import crypto, outbox
from storage.events import Event
from storage.redis_server import start_redis

PAYLOAD = {"cid": "b3c1d2e4f5a6", "kind": "text", "seq": 17, "content": {"text": "你好，我的快递到哪了？单号 SF1234567890 where is it"},
           "from": {"kind": "customer", "id": "c-88231", "role": "customer"}, "response_ms": 5300, "first_response": False}
SNAPSHOT = msgpack.packb([{"status": "assigned", "agent": "a-7", "customer_id": "c-88231", "bot": {"asked": ["在吗", "快递"] * 10},
                           "entry": {"page": "https://shop.example/p/rc-3l?utm=x", "product_id": "rc-3l"}, "seq": 40,
                           "cids": {f"c{i}": i for i in range(40)}}, {"q": 120}])


def timed(label: str, n: int, fn) -> tuple[str, float]:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return label, (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20000, help="operations per row (bounded: 1..1,000,000)")
    n = max(1, min(ap.parse_args().n, 1_000_000))
    throwaway_master_key()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp) / "redis")
        try:
            r = redis.Redis.from_url(server.url)
            ring = crypto.keyring(r, "bench:")
            sealed_payload = ring.seal_payload("m1", PAYLOAD)
            sealed_snapshot = ring.seal("m1", SNAPSHOT)
            events = [Event(merchant_id="m1", type="message.sent", actor_key="session:s1", seq=i, payload=PAYLOAD)
                      for i in range(20)]
            rows = [
                timed("seal an event payload", n, lambda: ring.seal_payload("m1", PAYLOAD)),
                timed("open an event payload", n, lambda: ring.open_payload("m1", sealed_payload)),
                timed(f"seal a snapshot ({len(SNAPSHOT)} B)", n, lambda: ring.seal("m1", SNAPSHOT)),
                timed("open a snapshot", n, lambda: ring.open("m1", sealed_snapshot)),
                timed("encode a 20-event outbox entry, clear", n // 20, lambda: outbox.encode_batch(events)),
                timed("encode a 20-event outbox entry, sealed", n // 20, lambda: outbox.encode_batch(events, ring)),
            ]
            print(f"{'operation':<44} {'µs each':>10}")
            for label, us in rows:
                print(f"{label:<44} {us:>10.1f}")
            clear, sealed = len(outbox.encode_batch(events)), len(outbox.encode_batch(events, ring))
            print(f"outbox entry size: {clear} B clear, {sealed} B sealed ({sealed / clear:.2f}x)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
