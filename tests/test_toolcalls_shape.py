"""Hostile tool-calling lines against the canonical shapes (core/toolcalls.py): every well-formed
conversation comes through canonical, every malformed one gives one reason naming the message."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.toolcalls import ToolCallError, calls_signature, calls_text, map_strings, normalize_tool_record, parse_tool_calls, validate_tool_record
from core.toolcall_render import assistant_message, finish_reason, render_messages, render_tool_calls

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def call(name="get_weather", args='{"city": "Paris"}', cid="call_a"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def conversation(*calls, results=None, tools=(WEATHER, TIME), **extra):
    calls = calls or (call(),)
    msgs = [{"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Weather in Paris, and the time?"},
            {"role": "assistant", "content": None, "tool_calls": list(calls)}]
    for c in calls if results is None else []:
        if isinstance(c, dict) and c.get("id"):
            msgs.append({"role": "tool", "tool_call_id": c["id"], "content": '{"temp_c": 18}'})
    msgs += results or []
    rec = {"id": "r1", "messages": msgs, "response": "It is 18 degrees in Paris.", **extra}
    if tools is not None:
        rec["tools"] = list(tools) if isinstance(tools, tuple) else tools
    return rec


WELL_FORMED = {
    "one call, content null, tool result": conversation(),
    "parallel calls, two results": conversation(call(), call("get_time", "{}", "call_b")),
    "arguments already parsed (SDK logs)": conversation(call(args={"city": "Paris"})),
    "no-argument tool with empty arguments": conversation(call("get_time", "", "call_t")),
    "tool result as text parts": conversation(results=[{"role": "tool", "tool_call_id": "call_a", "content": [{"type": "text", "text": "18C"}]}]),
    "tool result as a JSON object": conversation(results=[{"role": "tool", "tool_call_id": "call_a", "content": {"temp_c": 18}}]),
    "tool_choice auto": conversation(tool_choice="auto"),
    "named tool_choice": conversation(tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    "flat Responses-API tools": conversation(tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER["function"]["parameters"]}, TIME]),
    "legacy functions, function_call, function role": {
        "messages": [{"role": "user", "content": "Weather in Paris?"},
                     {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                     {"role": "function", "name": "get_weather", "content": "18C"}],
        "functions": [WEATHER["function"]], "function_call": {"name": "get_weather"}, "response": "18 degrees."},
    "answer is a tool call (chat completion object)": {
        "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER],
        "response": {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call()]}, "finish_reason": "tool_calls"}]}},
    "answer calls carried beside the response": {"messages": [{"role": "user", "content": "Time?"}], "tools": [TIME],
                                                 "response": None, "tool_calls": [call("get_time", "{}", None)]},
}


@pytest.mark.parametrize("name", list(WELL_FORMED))
def test_well_formed_tool_conversations_validate(name):
    raw = WELL_FORMED[name]
    assert validate_tool_record(raw) is None
    rec = normalize_tool_record(raw)
    assert "functions" not in rec and "function_call" not in rec
    for t in rec.get("tools") or []:
        assert t["type"] == "function" and isinstance(t["function"]["parameters"], dict)
    calls = [c for m in rec["messages"] if m.get("tool_calls") for c in m["tool_calls"]] + rec.get("tool_calls", [])
    assert calls and all(isinstance(c["arguments"], dict) and c["id"] for c in calls)
    ids = {c["id"] for c in calls}
    assert all(m["tool_call_id"] in ids and isinstance(m["content"], str) for m in rec["messages"] if m["role"] == "tool")
    assert normalize_tool_record(rec) == rec                     # canonical is a fixed point


def test_legacy_shapes_become_canonical():
    rec = normalize_tool_record(WELL_FORMED["legacy functions, function_call, function role"])
    assert rec["tools"] == [WEATHER] and rec["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert rec["messages"][1]["tool_calls"] == [{"id": "call_2_1", "name": "get_weather", "arguments": {"city": "Paris"}}]
    assert rec["messages"][2] == {"role": "tool", "tool_call_id": "call_2_1", "name": "get_weather", "content": "18C"}
    rec = normalize_tool_record(WELL_FORMED["answer is a tool call (chat completion object)"])
    assert rec["tool_calls"] == [{"id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}}]
    plain = {"messages": [{"role": "user", "content": "hi"}], "response": "hello"}
    assert normalize_tool_record(plain) is plain                  # no tool fields: untouched


MALFORMED = [
    (conversation(call(args='{"city": "Paris"')), "bad_tool_arguments: message 3 tool call 1 (get_weather) arguments are not valid JSON"),
    (conversation(call(args='["Paris"]')), "bad_tool_arguments: message 3 tool call 1 (get_weather) arguments are a JSON list, not an object"),
    (conversation(call(args='{"city": NaN}')), "bad_tool_arguments: message 3 tool call 1 (get_weather) arguments are not valid JSON (NaN is not JSON)"),
    (conversation(call(args=42)), "bad_tool_arguments: message 3 tool call 1 (get_weather) arguments is a int"),
    (conversation(call(args="[" * 100000 + "]" * 100000)), "bad_tool_arguments: message 3 tool call 1 (get_weather) arguments are"),
    (conversation(call("get_wether")), "undeclared_tool: message 3 tool call 1 names 'get_wether', which the record does not declare (it declares get_weather, get_time)"),
    (conversation(tools=None), "undeclared_tool: message 3 tool call 1 names 'get_weather', which the record does not declare (it declares no tools)"),
    (conversation(results=[{"role": "tool", "content": "18C"}]), "bad_tool_result: message 4 is a tool result without a tool_call_id"),
    (conversation(results=[{"role": "tool", "tool_call_id": "call_zz", "content": "18C"}]), "bad_tool_result: message 4 answers tool_call_id 'call_zz', which matches no earlier tool call"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "function", "name": "get_weather", "content": "x"}], "tools": [WEATHER]},
     "bad_tool_result: message 2 is a function result for 'get_weather', which no earlier turn called"),
    (conversation(tools={"get_weather": WEATHER}), "bad_tools: tools is a dict, not a list"),
    (conversation(tools=[WEATHER, WEATHER]), "bad_tools: tool 'get_weather' is declared twice"),
    (conversation(tools=[{"type": "function", "function": {"description": "no name"}}]), "bad_tools: tools[0] has no function name"),
    (conversation(tools=[{"type": "web_search"}]), "bad_tools: tools[0] has type 'web_search'"),
    (conversation(tools=[{"type": "function", "function": {"name": "get_weather", "parameters": "city: str"}}]), "bad_tools: tools[0] (get_weather) parameters is a str"),
    ({"messages": [{"role": "assistant", "content": None, "tool_calls": {"id": "x"}}], "tools": [WEATHER]}, "bad_tool_call: message 1 tool_calls is a dict, not a list"),
    (conversation("call_a"), "bad_tool_call: message 3 tool call 1 is a str, not an object"),
    (conversation({"id": "c", "type": "function", "function": {"arguments": "{}"}}), "bad_tool_call: message 3 tool call 1 has no function name"),
    (conversation({"id": "c", "type": "custom", "custom": {"name": "x", "input": "y"}}), "bad_tool_call: message 3 tool call 1 has type 'custom'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [call()],
                                                      "function_call": {"name": "get_weather", "arguments": "{}"}}], "tools": [WEATHER]},
     "bad_tool_call: message 2 has both tool_calls and a legacy function_call"),
    ({"messages": [{"role": "user", "content": "q", "tool_calls": [call()]}], "tools": [WEATHER]},
     "bad_tool_call: message 1 (user) carries tool calls; only assistant turns call tools"),
    (conversation(tool_choice="always"), "bad_tool_choice: tool_choice 'always' is not auto, none, required or a named tool"),
    (conversation(tool_choice={"type": "function", "function": {"name": "get_news"}}), "undeclared_tool: tool_choice names 'get_news'"),
    ({"messages": [{"role": "user", "content": "q"}], "tools": [WEATHER], "response": {"role": "assistant", "tool_calls": [call("get_news")]}},
     "undeclared_tool: answer tool call 1 names 'get_news'"),
    ({"messages": [{"role": "user", "content": "q"}], "tools": [WEATHER], "tool_calls": [call(args="{city: Paris}")]},
     "bad_tool_arguments: answer tool call 1 (get_weather) arguments are not valid JSON"),
]


@pytest.mark.parametrize("raw,reason", MALFORMED, ids=[r.split(":")[0] + f"-{i}" for i, (_, r) in enumerate(MALFORMED)])
def test_malformed_tool_lines_give_one_reason_naming_the_message(raw, reason):
    got = validate_tool_record(raw)
    assert got is not None and got.startswith(reason), got
    with pytest.raises(ToolCallError) as e:
        normalize_tool_record(raw)
    assert str(e.value) == got and f"{e.value.code}: {e.value.detail}" == got
    assert len(got) < 400                                        # a reason, not a dump of the line


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=12)
_fields = st.sampled_from(["tools", "functions", "tool_choice", "function_call", "tool_calls", "response"])


@settings(max_examples=200, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_fields, _json, min_size=1), st.lists(st.dictionaries(st.sampled_from(
    ["role", "content", "tool_calls", "function_call", "tool_call_id", "name"]), _json | st.sampled_from(["assistant", "tool", "function"])), max_size=4))
def test_garbage_in_tool_fields_is_a_reason_never_a_crash(fields, messages):
    raw = {"messages": [{"role": "user", "content": "q"}, *messages], **fields}
    reason = validate_tool_record(raw)
    assert reason is None or reason.split(":")[0] in {"bad_tools", "bad_tool_choice", "bad_tool_call", "bad_tool_arguments", "undeclared_tool", "bad_tool_result"}


def test_render_back_to_openai_shape_round_trips():
    rec = normalize_tool_record(WELL_FORMED["parallel calls, two results"])
    wire = render_messages(rec["messages"])
    assert wire[2]["tool_calls"][1] == {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    assert json.loads(wire[2]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    assert parse_tool_calls(wire[2], "message 3") == rec["messages"][2]["tool_calls"]
    legacy = render_messages(normalize_tool_record(WELL_FORMED["legacy functions, function_call, function role"])["messages"])
    assert legacy[2] == {"role": "tool", "tool_call_id": "call_2_1", "content": "18C"}
    # serve/predict: an answer with calls and no text
    calls = [{"name": "get_weather", "arguments": {"city": "Zürich"}}]
    msg = assistant_message(None, calls)
    assert msg["content"] is None and msg["tool_calls"][0]["function"]["arguments"] == '{"city": "Zürich"}'
    assert msg["tool_calls"][0]["id"].startswith("call_") and render_tool_calls(calls)[0]["id"] == msg["tool_calls"][0]["id"]  # stable ids
    assert finish_reason(calls) == "tool_calls" and finish_reason(None) == "stop"
    assert assistant_message("Hi", None) == {"role": "assistant", "content": "Hi"}


def test_dedup_and_pii_see_arguments():
    calls = [{"id": "call_x1", "name": "send_email", "arguments": {"to": "ann@example.com", "cc": ["bob@example.com"], "n": 2}}]
    red = map_strings(calls[0]["arguments"], lambda s: s.replace("@example.com", "@<redacted>"))
    assert red == {"to": "ann@<redacted>", "cc": ["bob@<redacted>"], "n": 2}
    again = [{**calls[0], "id": "call_other"}]
    assert calls_signature(calls) == calls_signature(again) and calls_text(calls) == calls_text(again)
    assert "ann@example.com" in calls_text(calls)
