from core.toolcalls import normalize_tool_record
from teacher.filters.toolcall import ToolCallFilter, ToolCallFilterConfig, json_schema, tool_usage

from filter_records import rec

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.", "parameters": {
    "type": "object", "required": ["city"],
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                   "days": {"type": "integer", "minimum": 1}}}}}
# BFCL's own flavour: "dict", "float", "tuple" and "any" types.
ROUTE = {"type": "function", "function": {"name": "plan_route", "parameters": {
    "type": "dict", "required": ["stops"],
    "properties": {"stops": {"type": "tuple", "items": {"type": "string"}}, "max_km": {"type": "float"},
                   "prefs": {"type": "dict", "properties": {"avoid_tolls": {"type": "boolean"}}}, "tag": {"type": "any"}}}}}


def tool_rec(calls, tools=(WEATHER, ROUTE), choice=None, text=""):
    r = rec(text, user="What's the weather in Paris?")
    r["tools"] = list(tools)
    r["tool_calls"] = [{"id": f"call_{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]
    if choice is not None:
        r["tool_choice"] = choice
    return r


def check(records, config=None):
    f = ToolCallFilter(config)
    f.setup(records)
    return f.check_all(records)


def test_calls_checked_against_declared_schemas():
    cases = [
        ([("get_weather", {"city": "Paris"})], True, ""),
        ([("get_weather", {"city": "Paris", "unit": "celsius", "days": 3}), ("plan_route", {"stops": ["a", "b"], "max_km": 12})], True, ""),
        ([("plan_route", {"stops": ["a"], "max_km": 1.5, "prefs": {"avoid_tolls": True}, "tag": 7})], True, ""),   # "any" takes anything
        ([("get_wether", {"city": "Paris"})], False, "undeclared_tool: call 1 names 'get_wether'; the request declares get_weather, plan_route"),
        ([("get_weather", {"unit": "celsius"})], False, "missing_argument: call 1 (get_weather) lacks required 'city'"),
        ([("get_weather", {"city": "Paris", "country": "FR"})], False, "unknown_argument: call 1 (get_weather) passes 'country'"),
        ([("get_weather", {"city": "Paris", "days": "three"})], False, "argument_type: call 1 (get_weather) argument days: 'three' is not of type 'integer'"),
        ([("get_weather", {"city": "Paris", "unit": "kelvin"})], False, "argument_invalid: call 1 (get_weather) argument unit: 'kelvin' is not one of"),
        ([("get_weather", {"city": "Paris", "days": 0})], False, "argument_invalid: call 1 (get_weather) argument days: 0 is less than the minimum"),
        ([("get_weather", {"city": "Paris"}), ("plan_route", {"stops": "a,b"})], False, "argument_type: call 2 (plan_route) argument stops: 'a,b' is not of type 'array'"),
        ([("plan_route", {"stops": [], "prefs": {"avoid_tolls": "yes"}})], False, "argument_type: call 1 (plan_route) argument prefs/avoid_tolls"),
        ([("get_weather", '{"city": "Paris"')], False, "invalid_arguments: call 1 (get_weather) arguments are not valid JSON"),
    ]
    verdicts = check([tool_rec(calls) for calls, _, _ in cases])
    for (calls, keep, reason), v in zip(cases, verdicts):
        assert v.keep is keep, (calls, v)
        assert v.reason.startswith(reason), (v.reason, reason)


def test_text_answers_pass_unless_tool_choice_demands_a_call():
    v = check([tool_rec([], text="It is sunny."),
               tool_rec([], choice="required", text="It is sunny."),
               tool_rec([("get_weather", {"city": "Paris"})], choice="none"),
               tool_rec([("plan_route", {"stops": ["a"]})], choice={"type": "function", "function": {"name": "get_weather"}}),
               tool_rec([("get_weather", {"city": "Paris"})], choice={"type": "function", "function": {"name": "get_weather"}})])
    assert [x.keep for x in v] == [True, False, False, False, True]
    assert all(x.reason.startswith("tool_choice_violated") for x in v[1:4])
    assert check([tool_rec([], choice="required")], ToolCallFilterConfig(enforce_tool_choice=False))[0].keep


def test_options_and_broken_schemas():
    r = tool_rec([("get_weather", {"city": "Paris", "country": "FR"})])
    assert check([r], ToolCallFilterConfig(allow_unknown_arguments=True))[0].keep
    assert check([tool_rec([("get_weather", {"city": 5})])], ToolCallFilterConfig(check_types=False))[0].keep
    broken = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "nonsense"}}}}}
    f = ToolCallFilter()
    recs = [tool_rec([("f", {"x": 1})], tools=[broken]), tool_rec([("f", {"y": 1})], tools=[broken])]
    f.setup(recs)
    v = f.check_all(recs)
    assert v[0].keep and not v[1].keep and "invalid JSON Schema" in f.note


def test_bfcl_types_map_to_json_schema():
    s = json_schema(ROUTE["function"]["parameters"])
    assert s["type"] == "object" and s["properties"]["stops"]["type"] == "array" and s["properties"]["max_km"]["type"] == "number"
    assert s["properties"]["prefs"]["type"] == "object" and "type" not in s["properties"]["tag"]
    assert ROUTE["function"]["parameters"]["type"] == "dict"   # a copy: the record keeps what was logged


def test_canonical_record_from_ingest_shape_is_checked():
    raw = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER],
           "response": {"role": "assistant", "content": None,
                        "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 2}'}}]}}
    r = normalize_tool_record(raw)
    assert r["tool_calls"] == [{"id": "call_9", "name": "get_weather", "arguments": {"city": "Paris", "days": 2}}]
    assert check([r])[0].keep


def test_tool_usage_for_the_data_report():
    recs = [tool_rec([("get_weather", {"city": "Paris"})]), tool_rec([("get_weather", {"city": "Rome"}), ("plan_route", {"stops": ["a"]})]),
            tool_rec([], text="Sunny."), rec('{"intent": "card_arrival"}')]
    u = tool_usage(recs)
    assert u == {"requests_with_tools": 3, "text_answers": 1, "text_answer_share": 1 / 3, "parallel_call_answers": 1,
                 "calls_per_tool": {"get_weather": 2, "plan_route": 1}}
