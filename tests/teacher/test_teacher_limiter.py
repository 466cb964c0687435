"""The queueing limiter waits (never fails) and holds the configured rate."""
from __future__ import annotations

import asyncio
import time

from teacher.limiter import Limiter, TokenBucket


def test_requests_per_minute_queue_at_the_rate():
    async def go():
        lim = Limiter(rpm=600, burst_s=0.1)  # 10/s, burst 1
        t0 = time.monotonic()
        await asyncio.gather(*[lim.acquire() for _ in range(11)])
        return time.monotonic() - t0

    elapsed = asyncio.run(go())
    assert 0.9 <= elapsed < 1.6  # 1 from the burst + 10 more at 10/s


def test_tokens_per_minute_and_settling_refunds():
    async def go():
        lim = Limiter(tpm=6000, burst_s=1.0)  # 100 tokens/s, bucket 100
        t0 = time.monotonic()
        await lim.acquire(100)
        lim.settle(100, 10)  # used only 10: 90 come back
        await lim.acquire(90)
        fast = time.monotonic() - t0
        await lim.acquire(50)  # now empty: waits ~0.5 s
        return fast, time.monotonic() - t0

    fast, total = asyncio.run(go())
    assert fast < 0.1 and 0.4 < total < 0.9


def test_oversized_request_waits_instead_of_failing_and_later_callers_queue_behind_it():
    async def go():
        b = TokenBucket(1000.0, 0.1)  # bucket of 100
        t0 = time.monotonic()
        big = asyncio.create_task(b.acquire(500))  # bigger than the bucket: waits for 400 tokens of refill
        small = asyncio.create_task(b.acquire(100))  # arrives after: queues behind the debt
        await big
        t_big = time.monotonic() - t0
        await small
        return t_big, time.monotonic() - t0

    t_big, t_small = asyncio.run(go())
    assert 0.35 < t_big < 0.7 and 0.45 < t_small < 0.9 and t_small > t_big
