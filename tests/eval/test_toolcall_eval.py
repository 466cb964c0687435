"""The eval's tool-call metrics (eval/toolcall_eval.py): each figure on hand-counted items, with
bootstrap intervals; replies parse from the OpenAI wire shape; the summary shows them."""
from __future__ import annotations

import json

import pytest

from core.llm import Reply
from eval.report import summary_markdown
from eval.toolcall_eval import reply_answer, request_kwargs, tool_metrics
from student.toolcall_format import answer_text

TOOLS = [{"type": "function", "function": {"name": "w", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "t", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def item(calls=None, text=None):
    return {"id": "x", "messages": [{"role": "user", "content": "q"}], "tools": TOOLS, "response": text,
            "tool_calls": [{"id": f"c{j}", **c} for j, c in enumerate(calls or [])] or None}


W = {"name": "w", "arguments": {"city": "Paris"}}
T = {"name": "t", "arguments": {"city": "Rome"}}


def test_each_figure_counts_what_it_says():
    items = [item([W]), item([W]), item([W, T]), item([T]), item(text="Hi"), item(text="Hi")]
    student_calls = [
        [{"name": "w", "arguments": {"city": "paris"}}],       # right (BFCL: case and spaces ignored)
        [{"name": "w", "arguments": {"city": "Oslo"}}],        # right tool, wrong argument
        [T, W],                                                # parallel, order-free: right
        None,                                                  # answered in text where a call was due
        [W],                                                   # called where text was due
        None,                                                  # text, right
    ]
    texts = [answer_text(None, c) if c else ("Sure" if i == 3 else "Hi") for i, c in enumerate(student_calls)]
    tm = tool_metrics(items, texts, student_calls, samples=500)
    m = tm["metrics"]
    assert m["tool_name_accuracy"] == pytest.approx(3 / 4)
    assert m["tool_args_exact_match"] == pytest.approx(2 / 4)
    assert m["tool_parallel_set_match"] == 1.0
    assert m["tool_text_when_called_rate"] == pytest.approx(1 / 4)
    assert m["tool_called_when_text_rate"] == pytest.approx(1 / 2)
    # per argument: 4 expected (city x4) + optional unit (absent, allowed) x3 ... counted by the matcher
    assert 0 < m["tool_per_argument_accuracy"] < 1
    assert tm["hits"] == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    for k in ("tool_name_accuracy", "tool_args_exact_match", "tool_per_argument_accuracy", "tool_called_when_text_rate"):
        lo, hi = tm["intervals"][k]
        assert lo <= m[k] <= hi and lo < hi
    assert tm["details"]["n_call_expected"] == 4 and tm["details"]["n_parallel"] == 1

    report = {"metrics": m, "intervals": tm["intervals"], "missing": tm["missing"], "details": {"tool_calls": tm["details"]},
              "counts": {"evaluated": 6}, "confidence": 0.95}
    text = summary_markdown({"run_id": "r", "stages": {}}, report, None)
    assert "Tool calls (4 holdout answers with calls, 1 of them parallel" in text
    assert "tool name 75.0% [" in text and "arguments exact 50.0% [" in text and "per argument" in text
    assert "answered in text where the teacher called: 25.0% [" in text
    from eval.report import report_markdown

    md = report_markdown({**report, "run_id": "r", "student": {"model": "s", "base_url": "u"}, "teacher": {"model": "t"}})
    assert "## Tool-call errors" in md and "| text_when_call | 1 |" in md and "| called_when_text | 1 |" in md


def test_missing_figures_say_why():
    tm = tool_metrics([item([W])], [answer_text(None, [W])], [[W]], samples=100)
    assert tm["metrics"]["tool_parallel_set_match"] is None and "several calls" in tm["missing"]["tool_parallel_set_match"]
    assert tm["metrics"]["tool_called_when_text_rate"] is None and tm["missing"]["tool_called_when_text_rate"]


def test_reply_answer_reads_the_wire_shape():
    wire = [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": json.dumps({"city": "Paris"})}}]
    text, calls, err = reply_answer(Reply(True, 1.0, text=None, tool_calls=wire))
    assert calls == [{"id": "call_1", "name": "w", "arguments": {"city": "Paris"}}] and err is None
    assert text == answer_text(None, [W])
    bad = [{"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{not json"}}]
    text, calls, err = reply_answer(Reply(True, 1.0, text=None, tool_calls=bad))
    assert calls == [{"name": "w", "arguments": {}}] and "not valid JSON" in err  # a wrong call, not a text answer
    assert reply_answer(Reply(False, 1.0, error="timeout: x"))[0] is None
    assert request_kwargs({"tools": TOOLS, "tool_choice": "auto"}) == {"tools": TOOLS, "tool_choice": "auto"}
    assert request_kwargs({"tools": None}) == {}
