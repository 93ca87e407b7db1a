"""The job runner (storage/jobs.py) on real Redis: one lane's jobs run in order while a slow lane
holds up no other; a job that keeps failing is given up after MAX_ATTEMPTS, its give-up hook
called once (a channel message never delivered: the agent is told); a gateway that died
mid-job leaves it for another; reserved field names are refused."""
from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from storage import jobs
from tests.api_client import run


async def _queue(r, prefix: str, items: list[tuple[str, dict]]) -> None:
    pipe = r.pipeline(transaction=True)
    for kind, fields in items:
        jobs.enqueue(pipe, prefix, kind, "m1", **fields)
    await pipe.execute()


def test_lanes_keep_their_order_and_a_slow_lane_holds_up_no_other(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        ran: list[tuple[str, int, float]] = []

        async def send(job):
            if job["lane"] == "slow":
                await asyncio.sleep(0.5)
            ran.append((job["lane"], job["n"], time.monotonic()))
        runner = jobs.Dispatcher(r, prefix, "g1", {"channel_send": send}, block_ms=10)
        await runner.ensure_group()
        await _queue(r, prefix, [("channel_send", {"lane": lane, "n": n}) for n in range(3) for lane in ("slow", "fast")])
        started = time.monotonic()
        await runner.step()
        assert [n for lane, n, _ in ran if lane == "slow"] == [0, 1, 2]
        assert [n for lane, n, _ in ran if lane == "fast"] == [0, 1, 2]
        fast_done = max(t for lane, _, t in ran if lane == "fast") - started
        assert fast_done < 0.4            # not behind the slow lane's 1.5 s
        await r.aclose()
    run(main())


def test_a_job_that_keeps_failing_is_given_up_once_and_kept(redis_url, prefix):
    async def main():
        r = aioredis.from_url(redis_url)
        clock, told = [1000.0], []

        async def send(job):
            raise RuntimeError("platform down 平台故障")

        async def gave_up(job):
            told.append(job)
        runner = jobs.Dispatcher(r, prefix, "g1", {"channel_send": send}, clock=lambda: clock[0], block_ms=10,
                                 on_dead={"channel_send": gave_up})
        await runner.ensure_group()
        await _queue(r, prefix, [("channel_send", {"lane": "wa", "session": "s1", "seq": 4})])
        for _ in range(jobs.MAX_ATTEMPTS + 2):
            await runner.step()
            clock[0] += max(jobs.BACKOFF_S) + 1
        assert len(told) == 1 and told[0]["attempt"] == jobs.MAX_ATTEMPTS and "平台故障" in told[0]["error"]
        assert await jobs.pending(r, prefix) == {"queued": 0, "retrying": 0, "dead": 1}
        await r.aclose()
    run(main())


def test_a_job_left_by_a_dead_gateway_is_run_by_another(redis_url, prefix, monkeypatch):
    async def main():
        r = aioredis.from_url(redis_url)
        done = []

        async def hang(job):
            await asyncio.sleep(3600)

        async def ok(job):
            done.append(job["n"])
        first = jobs.Dispatcher(r, prefix, "g1", {"webhook": hang}, block_ms=10)
        await first.ensure_group()
        await _queue(r, prefix, [("webhook", {"n": 1})])
        task = asyncio.create_task(first.step())
        await asyncio.sleep(0.2)
        task.cancel()                       # g1 dies mid-job: its entry stays pending
        monkeypatch.setattr(jobs, "CLAIM_IDLE_MS", 100)
        await asyncio.sleep(0.2)
        await jobs.Dispatcher(r, prefix, "g2", {"webhook": ok}, block_ms=10).step()
        assert done == [1]
        await r.aclose()
    run(main())


def test_reserved_field_names_are_refused():
    class Pipe:
        def xadd(self, *a, **k):
            raise AssertionError("nothing may be queued")
    for name in ("kind", "merchant", "id", "attempt"):
        with pytest.raises(ValueError, match=name):
            jobs.enqueue(Pipe(), "p:", "webhook", "m1", **{name: "x"})
