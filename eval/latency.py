"""Latency and throughput of one endpoint, measured the same way for teacher and student.

Warm-up requests are sent first and not timed (first requests pay connection setup, lazy model
loading, JIT). Then `n` requests at concurrency 1 (what one user sees: p50/p95/p99, TTFT) and `n`
requests at concurrency N (throughput, which prices the student per request). Every request goes
through core.llm.complete, the same call path as the rest of the project; the client never
retries on its own (a silent retry would be timed as one slow request).
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import numpy as np

from core.llm import Endpoint, Reply, complete


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99 and mean in the input's unit (linear interpolation); None when empty."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    p50, p95, p99 = np.percentile(x, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(x.mean())}


def summarize(results: list[Reply], wall_s: float, concurrency: int) -> dict:
    ok = [r for r in results if r.ok]
    lat = percentiles([r.latency_ms for r in ok])
    ttft = percentiles([r.ttft_ms for r in ok if r.ttft_ms is not None])
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "first_error": next((r.error for r in results if not r.ok), None),
        "latency_ms": lat,
        "ttft_ms": ttft,
        "latency_samples_ms": [round(r.latency_ms, 3) for r in ok],  # raw, for the report's distribution plot
        "wall_s": round(wall_s, 4),
        "throughput_rps": (len(ok) / wall_s) if wall_s > 0 and ok else None,
        "prompt_tokens": sum(r.prompt_tokens for r in ok),
        "completion_tokens": sum(r.completion_tokens for r in ok),
    }


Tick = Callable[[], None]


async def _timed(ep: Endpoint, messages: list[dict] | tuple[list[dict], dict], stream: bool, tick: Tick | None) -> Reply:
    # a prompt may be (messages, request parameters): a tool-calling request carries its tools
    messages, kw = messages if isinstance(messages, tuple) else (messages, {})
    r = await complete(ep, messages, stream=stream, **kw)
    if tick is not None:
        tick()
    return r


async def _run_level(ep: Endpoint, prompts: list[list[dict]], n: int, concurrency: int, stream: bool, tick: Tick | None = None) -> dict:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Reply:
        async with sem:
            return await _timed(ep, prompts[i % len(prompts)], stream, tick)

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    return summarize(list(results), time.perf_counter() - t0, concurrency)


async def _probe(ep: Endpoint, messages: list[dict], stream: bool, tick: Tick | None = None) -> tuple[bool, str | None, Reply | None]:
    """(stream?, note, failure): some servers refuse stream=True, then time without TTFT; an
    endpoint that fails both ways is not hammered with the whole timed run."""
    if stream:
        r = await _timed(ep, messages, True, tick)
        if r.ok:
            return True, None, None
    r2 = await _timed(ep, messages, False, tick)
    if r2.ok:
        return False, (f"streaming failed ({r.error}); timed without streaming, no TTFT" if stream else None), None
    return False, f"endpoint failed, not timed: {r2.error}", r2


def planned_requests(n: int, warmup: int, concurrency: int) -> int:
    """Requests measure_endpoint sends to a healthy streaming endpoint (the progress bar's total)."""
    return max(1, warmup) + n * (2 if concurrency > 1 else 1)


async def measure_endpoint(ep: Endpoint, prompts: list[list[dict]], n: int, warmup: int, concurrency: int, stream: bool = True,
                           tick: Tick | None = None) -> dict:
    """Warm up, then time `n` requests at concurrency 1 and `n` at `concurrency` (cycling prompts).
    tick() is called after each request (a progress bar's update)."""
    if not prompts:
        raise ValueError("no prompts to time")
    streamed, note, failure = await _probe(ep, prompts[0], stream, tick)
    if failure is not None:
        levels = {"c1": summarize([failure], 0.0, 1)}
    else:
        probes = 1 if (streamed or not stream) else 2  # the probe calls count as warm-up
        for i in range(max(0, warmup - probes)):
            await _timed(ep, prompts[i % len(prompts)], streamed, tick)
        levels = {"c1": await _run_level(ep, prompts, n, 1, streamed, tick)}
        if concurrency > 1:
            levels[f"c{concurrency}"] = await _run_level(ep, prompts, n, concurrency, streamed, tick)
    timed_requests = sum(lv["requests"] for lv in levels.values())
    return {
        "streamed": streamed,
        "note": note,
        "warmup_requests": warmup,
        "levels": levels,
        "timed_requests": timed_requests,
        "prompt_tokens": sum(lv["prompt_tokens"] for lv in levels.values()),
        "completion_tokens": sum(lv["completion_tokens"] for lv in levels.values()),
    }


def best_throughput(measure: dict) -> float | None:
    """Highest measured req/s over the concurrency levels (the student is priced at its best)."""
    vals = [lv["throughput_rps"] for lv in measure["levels"].values() if lv["throughput_rps"]]
    return max(vals) if vals else None
