"""A gateway connection's queue and writer, alone: a slow reader is closed (4001) without
holding anyone up; replayed and live messages reach the client in order, once."""
from __future__ import annotations

import asyncio

import orjson

from gateway.auth import Principal
from gateway.connection import QUEUE_FRAMES, Connection, Hub

WHO = Principal(kind="agent", merchant="m1", id="a1", role="agent")


def make(conn_id: str, send, log=None) -> tuple[Connection, list]:
    closed: list = []

    async def close(code, reason):
        closed.append((code, reason))

    async def read_log(merchant, session, after, upto):
        return [(s, f) for s, f in (log or []) if after < s <= upto]

    return Connection(conn_id, WHO, False, send, close, read_log), closed


def msg(seq: int) -> dict:
    return {"t": "msg", "session": "s1", "seq": seq, "kind": "text", "content": {"text": str(seq)}}


def test_a_reader_that_falls_behind_is_closed_4001_and_others_go_on():
    async def main():
        stuck = asyncio.Event()

        async def never_returns(data):
            await stuck.wait()

        got = []

        async def fine(data):
            got.append(orjson.loads(data))

        slow, slow_closed = make("slow", never_returns)
        fast, fast_closed = make("fast", fine)
        hub = Hub()
        hub.add(slow)
        hub.add(fast)
        writers = [asyncio.create_task(c.write_forever()) for c in (slow, fast)]
        for seq in range(1, QUEUE_FRAMES + 10):
            hub.deliver([("slow", msg(seq)), ("fast", msg(seq))])
            await asyncio.sleep(0) if seq % 100 == 0 else None
        await asyncio.sleep(0.05)
        assert slow_closed == [(4001, "too slow: reconnect and resume")]
        for _ in range(100):
            if len(got) == QUEUE_FRAMES + 9:
                break
            await asyncio.sleep(0.01)
        assert [f["seq"] for f in got] == list(range(1, QUEUE_FRAMES + 10)) and not fast_closed
        for w in writers:
            w.cancel()
    asyncio.run(main())


def test_replay_then_live_without_gap_or_repeat():
    async def main():
        got = []

        async def send(data):
            got.append(orjson.loads(data))

        log = [(s, msg(s)) for s in range(1, 8)]
        conn, _ = make("c", send, log)
        conn.last_seq["s1"] = 3  # what the client had seen
        writer = asyncio.create_task(conn.write_forever())
        conn.offer(msg(6))  # a live push that raced ahead of the subscription
        conn.offer({"t": "subscribed", "session": "s1", "after": 3, "last_seq": 7})
        conn.offer(msg(7))  # live, also in the replay
        conn.offer(msg(8))  # live, after the replay
        for _ in range(100):
            if got and got[-1].get("seq") == 8:
                break
            await asyncio.sleep(0.01)
        seqs = [f.get("seq") for f in got if f["t"] == "msg"]
        assert seqs == [4, 5, 6, 7, 8], seqs
        writer.cancel()
    asyncio.run(main())


def test_a_lost_or_overtaken_push_is_filled_from_the_log():
    async def main():
        got = []

        async def send(data):
            got.append(orjson.loads(data))

        conn, _ = make("c", send, [(s, msg(s)) for s in range(1, 10)])
        conn.last_seq["s1"] = 2  # the client has seen 1-2
        writer = asyncio.create_task(conn.write_forever())
        for seq in (3, 6, 5, 9):  # 4 lost, 5 overtaken by 6, 7-8 lost
            conn.offer(msg(seq))
        for _ in range(100):
            if got and got[-1]["seq"] == 9:
                break
            await asyncio.sleep(0.01)
        assert [f["seq"] for f in got] == [3, 4, 5, 6, 7, 8, 9]
        writer.cancel()
    asyncio.run(main())
