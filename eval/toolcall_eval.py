"""The eval stage for tool-calling traffic (issue #12): requests with their tools, answers with
their calls, and the tool-call metrics with bootstrap intervals.

- Each holdout request goes to the student exactly as it went to the teacher: its messages
  (tool turns in OpenAI shape), `tools` and `tool_choice`. The student's `tool_calls` come back
  through the OpenAI response, so what is scored is what a client would get.
- Answers are compared with the Berkeley Function Calling Leaderboard's AST semantics
  (eval/toolcall_metrics.py): the teacher's calls become possible answers (its values, an
  argument it left out may be left out), parallel calls match order-free. `agreement` of a
  tool-calling run is that match per item (a text answer: the texts match, as for any run).
- Metrics, each with a bootstrap interval over items: tool_name_accuracy (the same multiset of
  tool names), tool_args_exact_match (every call and argument right: BFCL's AST match),
  tool_per_argument_accuracy (argument-level, a ratio of sums resampled by item),
  tool_parallel_set_match (items whose answer has several calls), tool_called_when_text_rate
  (the teacher answered in text, the student called) and tool_text_when_called_rate (the reverse).
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from core.llm import Endpoint, Reply, complete
from core.toolcalls import ToolCallError, parse_tool_calls
from core.toolcall_render import render_messages
from eval.bootstrap import bootstrap_mean
from eval.metrics import outputs_match
from eval.toolcall_metrics import answers_from_calls, score_item, summarize
from student.toolcall_format import answer_text, row_answer_text

METRICS = ("tool_name_accuracy", "tool_args_exact_match", "tool_per_argument_accuracy", "tool_parallel_set_match",
           "tool_called_when_text_rate", "tool_text_when_called_rate")


def is_tool_run(items: list[dict]) -> bool:
    return any(r.get("tools") or r.get("tool_calls") for r in items)


def request_kwargs(item: dict) -> dict:
    """The request parameters beside the messages: the item's tools and tool_choice, as logged."""
    kw: dict[str, Any] = {}
    if item.get("tools"):
        kw["tools"] = item["tools"]
        if item.get("tool_choice") is not None:
            kw["tool_choice"] = item["tool_choice"]
    return kw


def prompts(items: list[dict]) -> list[tuple[list[dict], dict]]:
    """(OpenAI-shaped messages, request parameters) per item: what eval/latency.py times."""
    return [(render_messages(r["messages"]), request_kwargs(r)) for r in items]


def predict(ep: Endpoint, items: list[dict], concurrency: int, on_reply: Callable[[Reply], None] | None = None) -> list[Reply]:
    """One completion per item with its tools, `concurrency` in flight, in input order."""
    from core.llm import run_sync

    reqs = prompts(items)

    async def go() -> list[Reply]:
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(i: int) -> Reply:
            async with sem:
                r = await complete(ep, reqs[i][0], **reqs[i][1])
            if on_reply is not None:
                on_reply(r)
            return r

        return list(await asyncio.gather(*(one(i) for i in range(len(reqs)))))

    return run_sync(go())


def reply_answer(r: Reply) -> tuple[str | None, list[dict] | None, str | None]:
    """(canonical answer text, canonical calls, error) of one student reply; None text when it failed."""
    if not r.ok:
        return None, None, r.error
    try:
        calls = parse_tool_calls({"tool_calls": r.tool_calls}, "student answer") if r.tool_calls else None
    except ToolCallError as e:  # a call whose arguments are not JSON: a wrong call, not a text answer
        names = [((c.get("function") or {}).get("name") or "?") for c in r.tool_calls or []]
        return answer_text(r.text, [{"name": n, "arguments": {}} for n in names]), [{"name": n, "arguments": {}} for n in names], str(e)
    return answer_text(r.text, calls), calls, None


def gold_answer(record: dict, metadata_keys: Any) -> str | None:
    """The recorded production answer of a holdout ingest record as canonical answer text (calls included)."""
    from eval.metrics import gold_reference

    if record.get("tool_calls"):
        return row_answer_text(record)
    return gold_reference(record, metadata_keys)


def teacher_answers(items: list[dict]) -> list[str]:
    return [row_answer_text(r) for r in items]


def _ratio_interval(correct: np.ndarray, total: np.ndarray, samples: int, confidence: float, seed: int) -> list[float] | None:
    n = len(total)
    if n == 0 or total.sum() == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    t = total[idx].sum(axis=1)
    stats = np.where(t > 0, correct[idx].sum(axis=1) / np.maximum(t, 1), np.nan)
    stats = stats[~np.isnan(stats)]
    a = (1 - confidence) / 2
    return [float(np.quantile(stats, a)), float(np.quantile(stats, 1 - a))] if stats.size else None


def tool_metrics(items: list[dict], student_texts: list[str | None], student_calls: list[list[dict] | None],
                 *, samples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """{"metrics", "intervals", "missing", "details", "hits"} (hits: the tool-aware agreement per item)."""
    scores, hits = [], []
    for r, text, calls in zip(items, student_texts, student_calls, strict=True):
        expected = answers_from_calls(r.get("tool_calls"), r.get("tools")) if r.get("tool_calls") else []
        s = score_item(calls if text is not None else None, expected, r.get("tools"))
        scores.append(s)
        if text is None:
            hits.append(0.0)
        elif s.expected_call:
            hits.append(float(s.exact))
        else:
            hits.append(float(not s.predicted_call and outputs_match(text, r.get("response") or "")))
    call = [s for s in scores if s.expected_call]
    text = [s for s in scores if not s.expected_call]
    per_item = {
        "tool_name_accuracy": [s.name_match for s in call],
        "tool_args_exact_match": [s.exact for s in call],
        "tool_parallel_set_match": [s.exact for s in call if s.n_expected > 1],
        "tool_called_when_text_rate": [s.predicted_call for s in text],
        "tool_text_when_called_rate": [not s.predicted_call for s in call],
    }
    metrics: dict[str, Any] = {}
    intervals: dict[str, list[float]] = {}
    missing: dict[str, str] = {}
    why = {"tool_parallel_set_match": "no holdout answer has several calls",
           "tool_called_when_text_rate": "the teacher answered every holdout item with calls"}
    for name, xs in per_item.items():
        b = bootstrap_mean(np.array(xs, dtype=float), samples=samples, confidence=confidence, seed=seed)
        metrics[name] = b["value"]
        if b["ci"] is not None:
            intervals[name] = b["ci"]
        if b["value"] is None:
            missing[name] = why.get(name, "the teacher answered every holdout item in text")
    correct = np.array([s.args_correct for s in call], dtype=float)
    total = np.array([s.args_total for s in call], dtype=float)
    metrics["tool_per_argument_accuracy"] = float(correct.sum() / total.sum()) if total.sum() else None
    ci = _ratio_interval(correct, total, samples, confidence, seed)
    if ci is not None:
        intervals["tool_per_argument_accuracy"] = ci
    if metrics["tool_per_argument_accuracy"] is None:
        missing["tool_per_argument_accuracy"] = "no expected call has arguments"
    summary = summarize(scores)
    details = {"n": len(scores), "n_call_expected": len(call), "n_text_expected": len(text), "n_parallel": summary["n_parallel"],
               "errors": summary["errors"], "semantics": "BFCL AST match against the teacher's calls (eval/toolcall_metrics.py)"}
    return {"metrics": metrics, "intervals": intervals, "missing": missing, "details": details, "hits": hits}
