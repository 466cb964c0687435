"""core.llm, the one LLM call path, against the real reference teacher and its injected faults."""
from __future__ import annotations

import asyncio

import pytest

from core import llm

MSG = [{"role": "user", "content": "Question number 1: what is 1 plus 1?"}]


def _error(url: str, timeout_s: float = 5.0, **kw) -> BaseException:
    async def go():
        await llm.acompletion(llm.Endpoint("openai/reference-teacher", url, timeout_s=timeout_s), MSG, **kw)

    with pytest.raises(Exception) as e:
        asyncio.run(go())
    return e.value


@pytest.mark.parametrize("faults,reason", [
    ({"rate_429": 1.0, "retry_after_s": 0.25}, "rate_limited"),
    ({"rate_500": 1.0}, "server_error"),
    ({"rate_malformed": 1.0}, "malformed_response"),  # litellm raises InternalServerError caused by a JSONDecodeError
])
def test_injected_faults_are_classified_by_exception_type(dataset, serve, faults, reason):
    _, answers = dataset(2)
    f = llm.classify(_error(serve(answers, faults=faults).base_url))
    assert f.reason == reason and f.retryable
    assert f.retry_after_s == (0.25 if reason == "rate_limited" else None)


def test_timeout_refused_connection_and_bad_key(dataset, serve):
    _, answers = dataset(2)
    hung = serve(answers, faults={"rate_timeout": 1.0, "hang_s": 3.0})
    assert llm.classify(_error(hung.base_url, timeout_s=0.5)).reason == "timeout"
    # litellm wraps a refused connection as InternalServerError; the cause makes it a connection error
    assert llm.classify(_error("http://127.0.0.1:9/v1")).reason == "connection_error"
    locked = serve(answers, api_key="sk-right")
    f = llm.classify(_error(locked.base_url, api_key="sk-wrong"))
    assert f.reason == "http_401" and not f.retryable


def test_complete_streams_with_ttft_and_returns_errors(dataset, serve):
    _, answers = dataset(2)
    url = serve(answers, latency_ms=20).base_url
    ep = llm.Endpoint("openai/reference-teacher", url, max_tokens=32)
    plain, streamed = asyncio.run(llm.complete(ep, MSG)), asyncio.run(llm.complete(ep, MSG, stream=True))
    assert plain.ok and plain.text == streamed.text == "1 plus 1 is 2." and plain.ttft_ms is None
    assert plain.latency_ms >= 20 and plain.completion_tokens > 0
    assert streamed.ttft_ms is not None and streamed.ttft_ms <= streamed.latency_ms
    down = asyncio.run(llm.complete(llm.Endpoint("openai/x", "http://127.0.0.1:9/v1"), MSG))
    assert not down.ok and down.reason == "connection_error" and down.error.startswith("connection_error: ")


def test_complete_many_keeps_input_order_and_reports_each(dataset, serve):
    _, answers = dataset(6)
    ep = llm.Endpoint("openai/reference-teacher", serve(answers).base_url)
    convs = [[{"role": "user", "content": f"Question number {i}: what is {i} plus {i}?"}] for i in range(6)]
    seen = []
    out = asyncio.run(llm.complete_many(ep, convs, 3, on_reply=seen.append))
    assert [r.text for r in out] == [f"{i} plus {i} is {2 * i}." for i in range(6)] and len(seen) == 6


def test_endpoint_kwargs_dummy_key_and_passthrough(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    kw = llm.Endpoint("openai/m", "http://127.0.0.1:1/v1", extra={"tools": [{"type": "function"}]}).kwargs(max_tokens=9)
    assert kw["api_key"] == llm.DUMMY_API_KEY and kw["tools"] == [{"type": "function"}] and kw["max_tokens"] == 9
    assert "api_key" not in llm.Endpoint("anthropic/claude-x").kwargs()  # litellm reads the provider's env key
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert "api_key" not in llm.Endpoint("openai/m", "http://127.0.0.1:1/v1").kwargs()
    assert "sk-secret" not in repr(llm.Endpoint("openai/m", api_key="sk-secret"))


def test_one_price_function_custom_map_and_unpriced():
    assert llm.token_cost("openai/whatever", 1000, 500, 1e-6, 2e-6) == pytest.approx(0.002)
    assert llm.token_cost("gpt-4o-mini", 1000, 1000) > 0
    assert llm.Pricer("gpt-4o-mini", batch=True).cost(1000, 0) < llm.Pricer("gpt-4o-mini").cost(1000, 0)
    assert llm.token_cost("openai/not-a-model-xyz", 10, 10) is None
    # Registering an unmapped model (to spare litellm's per-request lookup) must not make it look priced.
    llm.register_prices("openai/not-a-model-xyz", None)
    assert not llm.Pricer("openai/not-a-model-xyz").priced


def test_run_sync_inside_a_running_loop():
    async def inner():
        return 7

    async def outer():
        return llm.run_sync(inner())  # e.g. an async Prefect task calling a sync stage function

    assert llm.run_sync(inner()) == 7 and asyncio.run(outer()) == 7


def test_fast_path_is_automatic_for_openai_compatible_endpoints(monkeypatch):
    assert llm.uses_fast(llm.Endpoint("openai/reference-teacher", "http://127.0.0.1:1/v1"))
    assert not llm.uses_fast(llm.Endpoint("openai/gpt-4o-mini"))  # the provider itself: litellm
    assert not llm.uses_fast(llm.Endpoint("anthropic/claude", "http://127.0.0.1:1"))
    assert not llm.uses_fast(llm.Endpoint("openai/x", "http://127.0.0.1:1/v1", fast=False))
    monkeypatch.setenv("DISTILL_OPENAI_FAST", "0")
    assert not llm.uses_fast(llm.Endpoint("openai/x", "http://127.0.0.1:1/v1"))


@pytest.mark.parametrize("faults,reason", [
    ({"rate_429": 1.0, "retry_after_s": 0.25}, "rate_limited"),
    ({"rate_500": 1.0}, "server_error"),
    ({"rate_malformed": 1.0}, "malformed_response"),
])
def test_litellm_and_fast_path_classify_alike(dataset, serve, faults, reason):
    _, answers = dataset(2)
    url = serve(answers, faults=faults).base_url
    for fast in (True, False):
        async def go():
            await llm.acompletion(llm.Endpoint("openai/reference-teacher", url, timeout_s=5.0, fast=fast), MSG)

        with pytest.raises(Exception) as e:
            asyncio.run(go())
        assert llm.classify(e.value).reason == reason, fast


def test_litellm_and_fast_path_answer_alike(dataset, serve):
    _, answers = dataset(2)
    url = serve(answers).base_url
    replies = [asyncio.run(llm.complete(llm.Endpoint("openai/reference-teacher", url, max_tokens=32, fast=f), MSG, stream=s))
               for f in (True, False) for s in (False, True)]
    assert all(r.ok and r.text == "1 plus 1 is 2." for r in replies)
    assert len({(r.prompt_tokens, r.completion_tokens) for r in replies}) == 1
