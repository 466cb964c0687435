"""Latency measurement and the pairwise judge against real local HTTP stubs."""
from __future__ import annotations

import asyncio

import pytest
from eval_stub_server import StubServer

from core.llm import Endpoint
from eval.config import JudgeConfig
from eval.judge import combine, judge_items, parse_verdict
from eval.latency import measure_endpoint, percentiles

MSGS = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]


def test_percentiles():
    p = percentiles(list(range(1, 101)))
    assert p["p50"] == pytest.approx(50.5) and p["p95"] == pytest.approx(95.05) and p["p99"] == pytest.approx(99.01)
    assert percentiles([])["p50"] is None


def test_measure_excludes_warmup_and_times_both_levels():
    with StubServer(lambda m: "some answer text here", delay_s=0.03) as url:
        m = asyncio.run(measure_endpoint(Endpoint("openai/s", url), MSGS, n=4, warmup=2, concurrency=2))
    assert m["streamed"] is True and set(m["levels"]) == {"c1", "c2"}
    c1 = m["levels"]["c1"]
    assert c1["requests"] == 4 and c1["errors"] == 0 and c1["latency_ms"]["p50"] >= 30
    assert c1["ttft_ms"]["p50"] is not None and m["completion_tokens"] > 0
    assert m["levels"]["c2"]["throughput_rps"] > 0
    assert m["timed_requests"] == 8


def test_measure_counts_requests_warmup_included_once():
    srv = StubServer(lambda m: "x")
    url = srv.start()
    try:
        asyncio.run(measure_endpoint(Endpoint("openai/s", url), MSGS, n=3, warmup=2, concurrency=1))
    finally:
        srv.stop()
    assert srv.requests == 2 + 3  # warm-up (the stream probe is one of them) + timed


def test_parse_and_combine_verdicts():
    assert parse_verdict(" b.") == "B" and parse_verdict("TIE") == "TIE" and parse_verdict("dunno") is None
    assert combine("B", "A") == 1.0  # student preferred in both positions
    assert combine("A", "B") == 0.0
    assert combine("A", "A") == 0.5  # position bias: always first -> tie
    assert combine("TIE", "A") == 0.5


def prefers_good(messages):
    """Judge stub: picks whichever answer contains 'good'."""
    text = messages[-1]["content"]
    a = text.split("Answer A:\n", 1)[1].split("\n\nAnswer B:", 1)[0]
    b = text.split("Answer B:\n", 1)[1].split("\n\nWhich answer", 1)[0]
    return "A" if "good" in a and "good" not in b else "B" if "good" in b and "good" not in a else "TIE"


def test_judge_both_orders_ties_and_bias():
    conv = [[{"role": "user", "content": f"q{i}"}] for i in range(4)]
    teacher = ["good t", "meh", "same", "good t"]
    student = ["meh", "good s", "same", "good s"]
    with StubServer(prefers_good) as url:
        r = asyncio.run(judge_items(JudgeConfig(enabled=True, model="openai/judge", api_base=url), conv, teacher, student))
        assert (r["wins"], r["ties"], r["losses"], r["identical"]) == (1, 2, 1, 1)
    with StubServer(lambda m: "A") as url:  # always picks the first answer
        r = asyncio.run(judge_items(JudgeConfig(enabled=True, model="openai/judge", api_base=url), conv, teacher, student))
        assert r["ties"] == 4 and r["wins"] == 0


def test_unreachable_endpoint_is_not_hammered():
    m = asyncio.run(measure_endpoint(Endpoint("openai/s", "http://127.0.0.1:9/v1", timeout_s=2), MSGS, n=50, warmup=5, concurrency=4))
    assert m["levels"]["c1"]["requests"] == 1 and m["levels"]["c1"]["errors"] == 1
    assert m["note"].startswith("endpoint failed") and m["levels"]["c1"]["latency_ms"]["p50"] is None
