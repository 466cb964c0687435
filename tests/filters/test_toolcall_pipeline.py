"""The tool-call filter in the filter stage: registered, drops schema-violating calls with their
reason, keeps answers that are only calls (not "empty", no text format to fail), and the other
filters and the data report see calls and tool sets."""
import json

from core.base import read_jsonl
from teacher.filter_config import FilterConfig
from teacher.filters.pipeline import build_filters, run_filters

from filter_records import rec

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "required": ["city"], "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


def tool_rec(rid, calls, tools=(WEATHER, TIME), text=None, choice=None, user="What's the weather in Paris?", split="train"):
    r = rec(text, user=user, rid=rid, split=split, finish_reason="tool_calls" if calls else "stop")
    r["tools"] = list(tools)
    if calls:
        r["tool_calls"] = [{"id": f"call_{rid}_{i}", "name": n, "arguments": a} for i, (n, a) in enumerate(calls)]
    if choice is not None:
        r["tool_choice"] = choice
    return r


def test_tool_call_filter_is_registered_and_configurable():
    names = [f.name for f in build_filters(FilterConfig())]
    assert "tool_call" in names and names.index("tool_call") < names.index("format")
    cfg = FilterConfig.model_validate({"tool_call": {"enabled": False, "allow_unknown_arguments": True}})
    f = next(f for f in build_filters(cfg) if f.name == "tool_call")
    assert not f.active and f.config.allow_unknown_arguments


def test_filter_stage_drops_schema_violating_calls_with_their_reason(make_rd, intent_schema):
    records = [
        tool_rec("ok1", [("get_weather", {"city": "Paris"})]),
        tool_rec("ok2", [("get_weather", {"city": "Rome", "days": 2}), ("get_time", {})], user="Rome, and the time?"),
        tool_rec("miss", [("get_weather", {"days": 2})], user="Weather for two days?"),
        tool_rec("type", [("get_weather", {"city": "Oslo", "days": "two"})], user="Oslo for two days?"),
        tool_rec("extra", [("get_weather", {"city": "Nice", "units": "C"})], user="Nice in Celsius?"),
        tool_rec("undecl", [("get_news", {})], user="Any news?"),
        tool_rec("badjson", [("get_weather", '{"city": "Par')], user="Paris?"),
        tool_rec("text_req", [], text="It is sunny.", choice="required", user="Is it sunny?"),
        tool_rec("text_ok", [], text='{"intent": "card_arrival"}', user="Where is my card?"),   # text answers still pass
    ]
    rd = make_rd(records)
    counts = run_filters(FilterConfig(json_schema=str(intent_schema)), rd)
    kept = {r["id"]: r for r in read_jsonl(rd.filter_kept)}
    dropped = {r["id"]: r for r in read_jsonl(rd.filter_dropped)}
    assert set(kept) == {"ok1", "ok2", "text_ok"}
    assert counts["replayed"] == counts["kept"] + counts["dropped"] == len(records)
    reasons = {k: (v["dropped_by"], v["reason"]) for k, v in dropped.items()}
    assert reasons["miss"] == ("tool_call", "missing_argument: call 1 (get_weather) lacks required 'city'")
    assert reasons["type"][0] == "tool_call" and reasons["type"][1].startswith("argument_type: call 1 (get_weather) argument days")
    assert reasons["extra"] == ("tool_call", "unknown_argument: call 1 (get_weather) passes 'units', not in the tool's schema")
    assert reasons["undecl"][1].startswith("undeclared_tool: call 1 names 'get_news'")
    assert reasons["badjson"][1].startswith("invalid_arguments:")
    assert reasons["text_req"][1].startswith("tool_choice_violated")
    assert counts["dropped_by_filter"] == {"tool_call": 6}
    assert kept["ok1"]["response"] is None and kept["ok1"]["tool_calls"][0]["arguments"] == {"city": "Paris"}


def test_conflicts_and_dedup_compare_calls_and_tool_sets(make_rd):
    q = "What's the weather in Paris?"
    records = [
        tool_rec("a1", [("get_weather", {"city": "Paris"})], user=q),
        tool_rec("a2", [("get_weather", {"city": "Paris"})], user=q),                    # same calls, other ids: a repeat
        tool_rec("b1", [("get_weather", {"city": "Paris", "days": 1})], tools=(WEATHER,), user=q),  # other tools: no conflict
        tool_rec("c1", [("get_time", {})], user="Time?"),
        tool_rec("c2", [("get_time", {})], user="Time?"),
        tool_rec("c3", [("get_weather", {"city": "Time"})], user="Time?"),               # the minority call
    ]
    rd = make_rd(records)
    run_filters(FilterConfig(), rd)
    dropped = {r["id"]: r["reason"].split(":")[0] for r in read_jsonl(rd.filter_dropped)}
    assert dropped == {"a2": "duplicate", "c3": "conflict_minority", "c2": "duplicate"}, dropped


def test_data_report_counts_calls_per_tool_and_text_answers(make_rd):
    records = [tool_rec(f"w{i}", [("get_weather", {"city": f"City {i}"})], user=f"Weather in city {i}?") for i in range(4)]
    records += [tool_rec("p1", [("get_weather", {"city": "Rome"}), ("get_time", {})], user="Rome and the time?"),
                tool_rec("t1", [], text="I can only tell the weather.", user="Tell me a joke"),
                tool_rec("bad", [("get_weather", {})], user="Weather?")]
    rd = make_rd(records)
    run_filters(FilterConfig.model_validate({"report": {"min_train_examples": 1}}), rd)
    report = json.loads(rd.data_report.read_text())
    tc = report["tool_calls"]
    # The teacher: 7 answers to requests with tools, one in text; 7 weather calls (the bad one too), 1 time call
    assert tc["teacher"]["requests_with_tools"] == 7 and tc["teacher"]["text_answers"] == 1
    assert tc["teacher"]["calls_per_tool"] == {"get_weather": 6, "get_time": 1} and tc["teacher"]["parallel_call_answers"] == 1
    assert {x["tool"]: x["kept_train_calls"] for x in tc["per_tool"]} == {"get_weather": 5, "get_time": 1}
    md = rd.data_report_md.read_text()
    assert "## Tool calls" in md and "1 in text instead of a call (14%)" in md and "| get_weather | 6 | 5 |" in md


def test_plain_text_data_has_no_tool_section_and_the_filter_stays_off(make_rd, intent_schema):
    rd = make_rd([rec('{"intent": "card_arrival"}', rid=f"x{i}", user=f"card {i}") for i in range(3)])
    run_filters(FilterConfig(json_schema=str(intent_schema)), rd)
    report = json.loads(rd.data_report.read_text())
    assert "tool_calls" not in report
    st = next(f for f in report["filters"] if f["name"] == "tool_call")
    assert st["active"] is False and st["note"] == "no tools declared: no check"
