"""core.llm's fast path: the openai SDK on aiohttp (httpx-aiohttp) for OpenAI-compatible endpoints.

litellm costs ~3.5 ms of CPU a request (133-178 req/s at most on 2 cores); the SDK on aiohttp
~1 ms (357-423 req/s). Requests, responses and errors are the SDK's own types, which core.llm's
parse_response and classify read as they read litellm's (litellm's subclass them).
"""
from __future__ import annotations

import asyncio
import os
from typing import Any


def uses_fast(ep: Any) -> bool:
    """Whether `ep` is called through the openai SDK on aiohttp (the fast path) rather than litellm.
    Auto: OpenAI-compatible endpoints ("openai/<name>" with an api_base: self-hosted teachers, the
    served student, the reference teacher), unless DISTILL_OPENAI_FAST=0. litellm costs ~3.5 ms of
    CPU a request (133-178 req/s at most on 2 cores); the SDK on aiohttp ~1 ms (357-423 req/s)."""
    if ep.fast is not None:
        return ep.fast
    return bool(ep.api_base) and ep.model.startswith("openai/") and os.environ.get("DISTILL_OPENAI_FAST", "1") != "0"


_fast_clients: dict[tuple, tuple[Any, Any, Any]] = {}  # (loop id, api_base, key) -> (loop, AsyncOpenAI, closer)


async def _closer(client: Any) -> Any:
    """Parked async generator: asyncio.run's shutdown_asyncgens() closes it as the loop ends, and
    its `finally` closes the client's aiohttp session on that loop (no "Unclosed connector")."""
    try:
        yield
    finally:
        await client.close()


async def _fast_client(api_base: str, api_key: str) -> Any:
    """One AsyncOpenAI per event loop and endpoint: its aiohttp session (and connection pool)
    belongs to the loop that made it."""
    import openai

    loop = asyncio.get_running_loop()
    key = (id(loop), api_base, api_key)
    hit = _fast_clients.get(key)
    if hit is not None and hit[0] is loop:
        return hit[1]
    for k, (lp, _, _) in list(_fast_clients.items()):  # clients of finished loops
        if lp.is_closed():
            del _fast_clients[k]
    client = openai.AsyncOpenAI(base_url=api_base, api_key=api_key,
                                max_retries=0, http_client=openai.DefaultAioHttpClient(limits=_pool_limits()))
    closer = _closer(client)
    await closer.__anext__()
    _fast_clients[key] = (loop, client, closer)
    return client


def _pool_limits() -> Any:
    import httpx

    return httpx.Limits(max_connections=1000, max_keepalive_connections=1000)  # concurrency is the caller's limiter's job


async def fast_completion(messages: list[dict], kw: dict[str, Any]) -> Any:
    """One chat completion for core.llm.acompletion: `kw` are its litellm-style keyword arguments
    (core.llm.Endpoint.kwargs), mapped onto the SDK's."""
    kw = dict(kw)
    api_base = kw.pop("api_base")
    api_key = kw.pop("api_key", None) or os.environ.get("OPENAI_API_KEY") or "no-key"
    retries = kw.pop("max_retries", 0)
    timeout = kw.pop("timeout")
    model = kw.pop("model").split("/", 1)[1]
    client = await _fast_client(api_base, api_key)
    if retries:
        client = client.with_options(max_retries=retries)
    return await client.chat.completions.create(model=model, messages=messages, timeout=timeout, **kw)
