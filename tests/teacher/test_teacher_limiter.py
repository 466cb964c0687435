"""The queueing limiter waits (never fails) and holds the configured rate.

Asserted on what the limiter books - each caller's scheduled start, computed when it arrives -
not on how late a loaded machine's event loop wakes the sleepers: a wall-clock upper bound
flakes on 2 busy cores, while the booked schedule is exact. Wall time is only checked from
below (nobody starts before their booked time, so the rate is never exceeded).
"""
from __future__ import annotations

import asyncio
import time

import pytest

from teacher.limiter import Limiter, TokenBucket

EARLY = 1e-3  # asyncio may fire a timer up to its clock resolution early


async def _timed(acquire, *args) -> tuple[float, float, float]:
    """(arrival, booked start, actual start) of one acquire."""
    arrived = time.monotonic()
    waited = await acquire(*args)
    return arrived, arrived + waited, time.monotonic()


def test_requests_per_minute_queue_at_the_rate():
    async def go():
        b = TokenBucket(10.0, 0.1)  # 10/s, burst 1
        return await asyncio.gather(*[_timed(b.acquire, 1) for _ in range(11)])

    runs = asyncio.run(go())
    booked = sorted(start for _, start, _ in runs)
    t0 = min(arrived for arrived, _, _ in runs)
    # 1 from the burst, then one every 0.1 s: the 11th at +1.0 s, whatever the loop's lag.
    assert [b - booked[0] for b in booked] == pytest.approx([0.1 * i for i in range(11)], abs=1e-3)
    assert booked[0] - t0 < 0.05 and booked[-1] - t0 == pytest.approx(1.0, abs=0.05)
    assert all(actual >= start - EARLY for _, start, actual in runs)  # never earlier than booked: the rate holds


def test_limiter_counts_its_waits():
    async def go():
        lim = Limiter(rpm=600, burst_s=0.1)
        await asyncio.gather(*[lim.acquire() for _ in range(11)])
        return lim.waited_s

    waited = asyncio.run(go())
    # 0 + 0.1 + ... + 1.0: every caller's wait is counted (concurrent callers once overwrote each other's).
    assert waited == pytest.approx(sum(0.1 * i for i in range(11)), abs=0.3)


def test_tokens_per_minute_and_settling_refunds():
    async def go():
        lim = Limiter(tpm=6000, burst_s=1.0)  # 100 tokens/s, bucket 100
        await lim.acquire(100)
        lim.settle(100, 10)  # used only 10: 90 come back
        await lim.acquire(90)
        after_refund = lim.waited_s
        t = time.monotonic()
        await lim.acquire(50)  # now empty: waits ~0.5 s
        return after_refund, lim.waited_s - after_refund, time.monotonic() - t

    after_refund, third, slept = asyncio.run(go())
    # Without the refund the second call would have waited 0.9 s.
    assert after_refund < 0.05
    assert 0.3 < third <= 0.5 + 1e-6 and slept >= third - EARLY


def test_oversized_request_waits_instead_of_failing_and_later_callers_queue_behind_it():
    async def go():
        b = TokenBucket(1000.0, 0.1)  # bucket of 100
        big = asyncio.create_task(_timed(b.acquire, 500))  # bigger than the bucket: waits for 400 tokens of refill
        small = asyncio.create_task(_timed(b.acquire, 100))  # arrives after: queues behind the debt
        return await big, await small

    (a_big, s_big, t_big), (_, s_small, t_small) = asyncio.run(go())
    assert s_big - a_big == pytest.approx(0.4, abs=1e-3)
    assert s_small - s_big == pytest.approx(0.1, abs=1e-3)  # FIFO: after the big one, by its own size
    assert t_big >= s_big - EARLY and t_small >= s_small - EARLY
