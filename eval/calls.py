"""The one OpenAI-compatible call path used for teacher, student and judge (litellm.acompletion).

Student and teacher are called the same way so latency and agreement are comparable: a student
served behind an OpenAI-compatible endpoint is reached as model="openai/<name>" + api_base.
litellm is imported lazily (3-5 s import, and it fetches a price map unless told not to).
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any


def _litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


@dataclass
class Endpoint:
    """Where and how to call a model. api_key: plain str (never logged)."""

    model: str
    api_base: str | None = None
    api_key: str | None = None
    temperature: float = 0.0
    max_tokens: int = 256
    timeout_s: float = 60.0
    num_retries: int = 0

    def kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout": self.timeout_s,
        }
        if self.api_base:
            kw["api_base"] = self.api_base
        # The OpenAI client refuses to start without a key even for local servers that ignore it.
        kw["api_key"] = self.api_key or ("not-needed" if self.api_base else None)
        if kw["api_key"] is None:
            del kw["api_key"]
        # Client-level retries: 0 for timing calls (a silent retry would be timed as one slow
        # request); prediction calls may retry transient errors.
        kw["max_retries"] = self.num_retries
        return kw


@dataclass
class Timed:
    """One timed call: total latency, time to first content token (streaming only), usage."""

    ok: bool
    latency_ms: float
    ttft_ms: float | None = None
    text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


async def complete(ep: Endpoint, messages: list[dict]) -> tuple[str | None, dict, str | None]:
    """(text, usage dict, error) for one non-streaming call; errors are returned, not raised."""
    litellm = _litellm()
    try:
        resp = await litellm.acompletion(messages=messages, **ep.kwargs())
        text = resp.choices[0].message.content
        u = getattr(resp, "usage", None)
        usage = {"prompt_tokens": getattr(u, "prompt_tokens", 0) or 0, "completion_tokens": getattr(u, "completion_tokens", 0) or 0}
        return text, usage, None
    except Exception as e:  # noqa: BLE001 - one failed item must not end the evaluation
        return None, {"prompt_tokens": 0, "completion_tokens": 0}, f"{type(e).__name__}: {e}"[:500]


async def complete_many(ep: Endpoint, conversations: list[list[dict]], concurrency: int) -> list[tuple[str | None, dict, str | None]]:
    sem = asyncio.Semaphore(concurrency)

    async def one(m):
        async with sem:
            return await complete(ep, m)

    return await asyncio.gather(*(one(m) for m in conversations))


async def timed_call(ep: Endpoint, messages: list[dict], stream: bool) -> Timed:
    """Time one request end to end; with stream=True also the first chunk carrying content."""
    litellm = _litellm()
    t0 = time.perf_counter()
    try:
        if not stream:
            resp = await litellm.acompletion(messages=messages, **ep.kwargs())
            lat = (time.perf_counter() - t0) * 1000
            u = getattr(resp, "usage", None)
            return Timed(True, lat, None, resp.choices[0].message.content,
                         getattr(u, "prompt_tokens", 0) or 0, getattr(u, "completion_tokens", 0) or 0)
        resp = await litellm.acompletion(messages=messages, stream=True, stream_options={"include_usage": True}, **ep.kwargs())
        ttft = None
        parts: list[str] = []
        pt = ct = 0
        async for chunk in resp:
            if chunk.choices:
                delta = chunk.choices[0].delta
                piece = getattr(delta, "content", None)
                if piece:
                    if ttft is None:
                        ttft = (time.perf_counter() - t0) * 1000
                    parts.append(piece)
            u = getattr(chunk, "usage", None)
            if u:
                pt = getattr(u, "prompt_tokens", 0) or pt
                ct = getattr(u, "completion_tokens", 0) or ct
        lat = (time.perf_counter() - t0) * 1000
        return Timed(True, lat, ttft, "".join(parts), pt, ct)
    except Exception as e:  # noqa: BLE001
        return Timed(False, (time.perf_counter() - t0) * 1000, error=f"{type(e).__name__}: {e}"[:500])
