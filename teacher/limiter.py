"""Client-side queueing rate limiter: requests/min and tokens/min token buckets.

litellm's Router rpm is a cap that fails fast; this one *waits*: callers queue FIFO (each books
its start time on arrival) and go when the bucket has refilled. The bucket's capacity (its
burst) is `burst_s` seconds of the rate, kept below a provider's own burst so we do not trip
its limit at start-up; in steady state the throughput is exactly the configured rate.
Token use is estimated before the call (prompt estimate + max_tokens*n, as providers count
max_tokens against TPM) and settled to the real usage afterwards.
"""
from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Token bucket whose balance may go negative: a caller that finds too few tokens takes them
    anyway (queueing behind earlier debt) and sleeps until its share has refilled.

    Each caller computes its own start time when it arrives, so the queue is FIFO with no lock
    and no hand-offs between waiters: a busy event loop waking sleepers late does not lower the
    rate (a lock-and-wake design capped us at ~20 req/s under CPU load).
    """

    def __init__(self, rate_per_s: float, burst_s: float = 0.5):
        self.rate = rate_per_s
        self.capacity = max(1.0, rate_per_s * burst_s)
        self.tokens = self.capacity
        self.t = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def reserve(self, amount: float = 1.0) -> float:
        """Take `amount` now; returns how long the caller must wait before using it (0 if none)."""
        self._refill()
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self, amount: float = 1.0) -> float:
        """Wait for `amount` (never refuses; an oversized request just waits longer); returns seconds waited."""
        wait = self.reserve(amount)
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.refund(amount)  # a cancelled waiter gives its place back
                raise
        return wait

    def refund(self, amount: float) -> None:
        """Give back (or, negative, charge extra) after the real usage is known."""
        self._refill()
        self.tokens = min(self.capacity, self.tokens + amount)


class Limiter:
    """rpm and/or tpm; either may be None (unlimited). `await acquire(est_tokens)`, then `settle(est, actual)`."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, burst_s: float = 0.5):
        self.requests = TokenBucket(rpm / 60.0, burst_s) if rpm else None
        self.tokens = TokenBucket(tpm / 60.0, burst_s) if tpm else None
        self.waited_s = 0.0

    async def acquire(self, est_tokens: int = 0) -> None:
        # Await first, then add: `self.waited_s += await ...` reads the total before the wait,
        # so concurrent callers overwrote each other's waits.
        if self.requests is not None:
            w = await self.requests.acquire(1)
            self.waited_s += w
        if self.tokens is not None:
            w = await self.tokens.acquire(est_tokens)
            self.waited_s += w

    def settle(self, est_tokens: int, actual_tokens: int) -> None:
        if self.tokens is not None and est_tokens != actual_tokens:
            self.tokens.refund(est_tokens - actual_tokens)
