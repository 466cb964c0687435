"""Cost per 1k, training cost, break-even."""
from __future__ import annotations

import pytest

from core.llm import token_cost
from eval.cost import break_even, student_cost_per_1k, teacher_cost_per_1k, training_cost


def test_teacher_cost_uses_replay_cost_when_recorded():
    replay = [{"status": "ok", "cost_usd": 0.002}, {"status": "ok", "cost_usd": 0.004}, {"status": "failed", "cost_usd": 0.0}]
    assert teacher_cost_per_1k(replay, "openai/x", None, None)["usd"] == pytest.approx(3.0)


def test_teacher_cost_from_custom_prices_when_replay_unpriced():
    replay = [{"status": "ok", "cost_usd": 0.0, "prompt_tokens": 100, "completion_tokens": 10}]
    tc = teacher_cost_per_1k(replay, "openai/reference-teacher", 1e-6, 2e-6)
    assert tc["usd"] == pytest.approx(0.12) and "prices" in tc["source"]


def test_teacher_cost_from_litellm_price_map_and_unpriced():
    assert token_cost("gpt-4o-mini", 1000, 1000, None, None) > 0
    tc = teacher_cost_per_1k([{"status": "ok", "cost_usd": 0, "prompt_tokens": 1, "completion_tokens": 1}], "openai/not-a-model-xyz", None, None)
    assert tc["usd"] is None and "price map" in tc["source"]


def test_student_cost_from_throughput():
    # $3.60/h at 10 req/s = 36,000 req/h -> $0.0001/req -> $0.1 per 1k
    assert student_cost_per_1k(3.6, 10) == pytest.approx(0.1)
    assert student_cost_per_1k(3.6, None) is None


def test_training_cost_and_break_even():
    assert training_cost(1800, 2.0) == pytest.approx(1.0)
    be = break_even(teacher_per_1k=1.0, student_per_1k=0.5, train_usd=10.0, monthly_requests=100_000)
    assert be["break_even_requests"] == pytest.approx(20_000)  # $10 / $0.0005 saved per request
    assert be["payback_months"] == pytest.approx(0.2)
    assert be["training_per_1k_amortised"] == pytest.approx(0.1)
    assert be["student_per_1k_with_training"] == pytest.approx(0.6)
    assert be["monthly_saving_usd"] == pytest.approx(50.0)
    never = break_even(0.5, 0.6, 10.0, 1000)
    assert never["break_even_requests"] is None and never["verdict"].startswith("never")
