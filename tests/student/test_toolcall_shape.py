"""Tool calls as classifier fields (student/toolcall_shape.py): the mapping round-trips, and kind
auto picks the encoder for a fixed tool list with span/categorical arguments, the causal LM otherwise."""
from __future__ import annotations

import json

from student.base import Example
from student.config import AutoStudentConfig
from student.toolcall_format import answer_text
from student.toolcall_shape import decide, for_kind, from_fields, to_fields

TOOLS = [
    {"type": "function", "function": {"name": "transfer", "parameters": {"type": "object", "properties": {"amount": {"type": "string"}, "to": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "block_card", "parameters": {"type": "object", "properties": {"reason": {"type": "string", "enum": ["lost", "cancel"]}}}}},
]
NAMES = ["Ann", "Bob", "Cy", "Di"]


def examples(n: int = 40, tools=TOOLS) -> list[Example]:
    out = []
    for i in range(n):
        who, amt = NAMES[i % 4], f"{10 + i % 5} euros"
        if i % 4 == 3:
            out.append(Example(f"e{i}", [{"role": "user", "content": f"hello there {i}"}], "Hello! How can I help?", tools))
        elif i % 2:
            out.append(Example(f"e{i}", [{"role": "user", "content": f"my card is {'lost' if i % 3 else 'to cancel'}"}],
                               answer_text(None, [{"name": "block_card", "arguments": {"reason": "lost" if i % 3 else "cancel"}}]), tools))
        else:
            calls = [{"name": "transfer", "arguments": {"amount": amt, "to": who}}]
            if i % 8 == 0:  # parallel: two tools in one answer
                calls.append({"name": "block_card", "arguments": {"reason": "lost"}})
            out.append(Example(f"e{i}", [{"role": "user", "content": f"send {amt} to {who} please"}], answer_text(None, calls), tools))
    return out


def test_fields_round_trip():
    calls = [{"name": "transfer", "arguments": {"amount": "5 euros", "to": "Ann"}}, {"name": "block_card", "arguments": {"reason": "lost"}}]
    f, why = to_fields(answer_text(None, calls))
    assert why is None and f == {"tools": ["block_card", "transfer"], "arg.reason": "lost", "arg.amount": "5 euros", "arg.to": "Ann"}
    content, back = from_fields(f, TOOLS)  # each tool takes the arguments its schema declares
    assert content is None and sorted(back, key=lambda c: c["name"]) == sorted(calls, key=lambda c: c["name"])
    assert to_fields("Hi!") == ({"tools": [], "text": "Hi!"}, None) and from_fields({"tools": [], "text": "Hi!"}) == ("Hi!", None)
    twice = answer_text(None, [{"name": "transfer", "arguments": {"to": "Ann"}}, {"name": "transfer", "arguments": {"to": "Bob"}}])
    assert to_fields(twice)[0] is None and "more than once" in to_fields(twice)[1]
    nested = answer_text(None, [{"name": "transfer", "arguments": {"to": {"name": "Ann"}}}])
    assert to_fields(nested)[0] is None and "not a scalar" in to_fields(nested)[1]


def test_kind_auto_picks_the_classifier_for_a_fixed_tool_list():
    ex = examples()
    d = decide(AutoStudentConfig(), ex)
    assert d["kind"] == "classifier", d
    assert d["types"]["tools"] == "set" and d["types"]["arg.to"] == "span" and d["types"]["arg.reason"] == "categorical"
    train, val, allx, cls = for_kind("classifier", ex[:30], ex[30:], ex, object)
    assert cls.__name__ == "ToolFieldsClassifier" and cls.fixed_tools == TOOLS
    assert json.loads(train[0].target) == {"tools": ["block_card", "transfer"], "arg.reason": "lost", "arg.amount": "10 euros", "arg.to": "Ann"}
    assert for_kind("causal_lm", ex, [], ex, object)[3] is object  # the causal LM keeps the answer text


def test_kind_auto_picks_the_causal_lm_when_tools_vary_or_calls_repeat():
    ex = examples()
    varied = [Example(e.id, e.messages, e.target, TOOLS[: 1 + i % 2]) for i, e in enumerate(ex)]
    d = decide(AutoStudentConfig(), varied)
    assert d["kind"] == "causal_lm" and d["decided_by"] == "tools"
    twice = ex + [Example("x", [{"role": "user", "content": "pay Ann and Bob"}],
                          answer_text(None, [{"name": "transfer", "arguments": {"to": "Ann"}}, {"name": "transfer", "arguments": {"to": "Bob"}}]), TOOLS)]
    d = decide(AutoStudentConfig(), twice)
    assert d["kind"] == "causal_lm" and "more than once" in d["reason"]
    assert decide(AutoStudentConfig(), [Example("a", [], "x")]) is None  # no tools: the ordinary decision
