"""Tool calling through the teacher: the reference teacher answers with OpenAI tool_calls looked up
by question AND tool set; replay sends each record's tools (and tool_choice) over real HTTP and
stores the answer whole (text and/or canonical calls); the ledger and costs work as for text."""
from __future__ import annotations

import json

import pytest

from core.base import DistillError, read_jsonl, write_jsonl
from core.rundir import RunDir
from teacher.config import TeacherConfig
from teacher.replay import run_replay


def tool(name, **props):
    return {"type": "function", "function": {"name": name, "parameters": {
        "type": "object", "properties": {k: {"type": v} for k, v in props.items()}, "required": list(props)}}}


WEATHER, FORECAST, TIME = tool("get_weather", city="string"), tool("get_forecast", city="string", days="integer"), tool("get_time")
Q = "What is the weather in Paris?"


def answers_file(tmp_path):
    rows = [  # the same question with two tool sets answers differently (as BFCL's repeats do)
        {"id": "w1", "user": Q, "tools": ["get_weather"], "response": "I will look it up.",
         "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"id": "w2", "user": Q, "tools": ["get_forecast", "get_weather"], "response": "",
         "tool_calls": [{"name": "get_forecast", "arguments": {"city": "Paris", "days": 1}},
                        {"name": "get_weather", "arguments": {"city": "Paris"}}]},
        {"id": "t1", "user": "Thanks, and the time?", "response": "", "tool_calls": [{"name": "get_time", "arguments": {}}]},
        {"id": "h1", "user": "Hello there", "response": "Hi! How can I help?"},
    ]
    p = tmp_path / "answers.jsonl"
    write_jsonl(p, rows)
    return p


def run_dir(tmp_path) -> RunDir:
    def rec(i, user, tools=None, tool_choice=None, prior=()):
        r = {"id": f"r{i}", "messages": [*prior, {"role": "user", "content": user}], "response": None, "model": None,
             "timestamp": None, "metadata": {}, "split": "train"}
        if tools:
            r["tools"] = tools
        if tool_choice:
            r["tool_choice"] = tool_choice
        return r

    history = [{"role": "user", "content": Q},
               {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}]},
               {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]
    rows = [rec(0, Q, [WEATHER]), rec(1, Q, [FORECAST, WEATHER]), rec(2, Q, [WEATHER], tool_choice="none"),
            rec(3, "Thanks, and the time?", [WEATHER, TIME], prior=history), rec(4, "Hello there")]
    rd = RunDir.create(tmp_path / "runs", "t")
    write_jsonl(rd.path / "ingest" / "train.jsonl", rows)
    return rd


def cfg(url, **kw) -> TeacherConfig:
    return TeacherConfig(**{"api_base": url, "concurrency": 4, "progress": False, "timeout_s": 5, "backoff_base_s": 0.01,
                            "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6, **kw})


@pytest.mark.parametrize("fast", ["1", "0"], ids=["openai-sdk-fast-path", "litellm"])
def test_replay_sends_tools_and_stores_the_calls(serve, tmp_path, monkeypatch, fast):
    monkeypatch.setenv("DISTILL_OPENAI_FAST", fast)
    t = serve(answers_file(tmp_path))
    rd = run_dir(tmp_path)
    out = run_replay(cfg(t.base_url), rd, tmp_path / "ledger.db")
    recs = {r["id"]: r for r in read_jsonl(rd.replay_responses)}
    assert out["counts"]["ok"] == 5, out
    r0, r1, r2, r3, r4 = (recs[f"r{i}"] for i in range(5))
    assert r0["tool_calls"] == [{"id": r0["tool_calls"][0]["id"], "name": "get_weather", "arguments": {"city": "Paris"}}]
    assert r0["response"] == "I will look it up." and r0["finish_reason"] == "tool_calls" and r0["tools"] == [WEATHER]
    # the other tool set, the other answer: the tools reached the teacher
    assert [c["name"] for c in r1["tool_calls"]] == ["get_forecast", "get_weather"] and r1["response"] is None
    assert r1["tool_calls"][0]["arguments"] == {"city": "Paris", "days": 1}
    # tool_choice "none" reached it too: text, no calls
    assert r2["response"] == "I will look it up." and "tool_calls" not in r2 and r2["finish_reason"] == "stop" and r2["tool_choice"] == "none"
    assert r3["tool_calls"][0]["name"] == "get_time" and r3["messages"][1]["tool_calls"][0]["arguments"] == {"city": "Paris"}
    assert r4["response"] == "Hi! How can I help?" and "tool_calls" not in r4 and "tools" not in r4
    # what went over the wire: OpenAI shape (arguments as JSON strings), the tools, the tool_choice
    sent = {b["messages"][-1]["content"] + str(len(b.get("tools") or [])) + str(b.get("tool_choice")): b for b in t.recent_bodies}
    b3 = sent["Thanks, and the time?2None"]
    assert b3["tools"] == [WEATHER, TIME]
    assert b3["messages"][1]["tool_calls"] == [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert b3["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
    assert "tools" not in sent["Hello there0None"] and sent[Q + "1none"]["tool_choice"] == "none"
    # cost as for text: usage tokens times the prices (the calls count as completion tokens)
    assert r1["completion_tokens"] > 0 and r1["cost_usd"] == pytest.approx(r1["prompt_tokens"] * 1e-6 + r1["completion_tokens"] * 2e-6)
    assert out["figures"]["cost_usd_total"] == pytest.approx(sum(r["cost_usd"] for r in recs.values()))


def test_rerun_gets_the_calls_from_the_ledger_without_http(serve, tmp_path):
    t = serve(answers_file(tmp_path))
    rd = run_dir(tmp_path)
    c = cfg(t.base_url)
    run_replay(c, rd, tmp_path / "ledger.db")
    first = list(read_jsonl(rd.replay_responses))
    t.stop()
    again = run_replay(c, rd, tmp_path / "ledger.db")
    recs = list(read_jsonl(rd.replay_responses))
    assert again["counts"]["ledger_hits"] == 5 and again["counts"]["http_requests"] == 0 and again["figures"]["cost_usd_total"] == 0
    assert [r.get("tool_calls") for r in recs] == [r.get("tool_calls") for r in first]


def test_tools_change_the_ledger_key(serve, tmp_path):
    t = serve(answers_file(tmp_path))
    rd = run_dir(tmp_path)
    run_replay(cfg(t.base_url), rd, tmp_path / "ledger.db")
    rows = list(read_jsonl(rd.ingest_train))
    rows[0]["tools"] = [WEATHER, TIME]  # same messages, another tool set: another request, paid again
    write_jsonl(rd.ingest_train, rows)
    out = run_replay(cfg(t.base_url), rd, tmp_path / "ledger.db")
    assert out["counts"]["ledger_hits"] == 4 and out["counts"]["paid"] == 1


def test_batch_mode_refuses_tool_prompts_instead_of_dropping_their_tools(tmp_path):
    rd = run_dir(tmp_path)
    with pytest.raises(DistillError, match="batch does not send tools"):
        run_replay(cfg("http://127.0.0.1:9/v1", mode="batch", model="openai/gpt-4o-mini"), rd, tmp_path / "ledger.db")


def test_reference_teacher_speaks_openai_tool_calls(serve, tmp_path):
    """A client that works with a hosted teacher works unchanged: the openai SDK parses the calls."""
    import openai

    t = serve(answers_file(tmp_path))
    oa = openai.OpenAI(base_url=t.base_url, api_key="x", max_retries=0)
    r = oa.chat.completions.create(model="m", messages=[{"role": "user", "content": Q}], tools=[FORECAST, WEATHER])
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls" and ch.message.content is None
    assert [(c.type, c.function.name, json.loads(c.function.arguments)) for c in ch.message.tool_calls] == [
        ("function", "get_forecast", {"city": "Paris", "days": 1}), ("function", "get_weather", {"city": "Paris"})]
    assert all(c.id.startswith("call_") for c in ch.message.tool_calls)
    # without the tools declared it cannot call them: the text answer
    r = oa.chat.completions.create(model="m", messages=[{"role": "user", "content": Q}])
    assert r.choices[0].message.content == "I will look it up." and r.choices[0].message.tool_calls is None
    # streamed, the calls arrive as tool_calls deltas
    calls: dict[int, dict] = {}
    finish = None
    for chunk in oa.chat.completions.create(model="m", messages=[{"role": "user", "content": Q}], tools=[WEATHER], stream=True):
        for d in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            c = calls.setdefault(d.index, {"name": "", "arguments": ""})
            c["name"] += d.function.name or ""
            c["arguments"] += d.function.arguments or ""
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    assert finish == "tool_calls" and [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [("get_weather", {"city": "Paris"})]


def test_answers_file_with_bad_tool_calls_is_a_clear_error(tmp_path):
    from teacher.reference.server import load_answer_index

    p = tmp_path / "a.jsonl"
    write_jsonl(p, [{"user": "q", "response": "", "tool_calls": [{"name": "f", "arguments": "{oops"}]}])
    with pytest.raises(DistillError, match="line 1: bad_tool_arguments"):
        load_answer_index(p)


def test_bfcl_reference_answers_resolve_every_repeated_question_by_tool_set(tmp_path):
    """All 1,000 BFCL prompts get their own reference answer, the 15 questions that repeat with a
    different answer included."""
    import gzip
    from pathlib import Path

    from teacher.reference.config import ReferenceTeacherConfig
    from teacher.reference.server import ReferenceTeacher

    ex = Path(__file__).resolve().parents[2] / "examples" / "bfcl"
    t = ReferenceTeacher(ReferenceTeacherConfig(answers=str(ex / "reference_answers.jsonl")))
    refs = {r["id"]: r for r in read_jsonl(ex / "reference_answers.jsonl")}
    logs = [json.loads(x) for x in gzip.open(ex / "prompt_log.jsonl.gz")]
    wrong = [r["id"] for r in logs if t.lookup(r["messages"], r["tools"])["id"] != r["id"]]
    assert not wrong
    differing = {}
    for r in refs.values():
        differing.setdefault(r["user"], set()).add(json.dumps(r["tool_calls"], sort_keys=True))
    assert sum(len(v) > 1 for v in differing.values()) == 15


@pytest.mark.parametrize("stream", [False, True])
def test_llm_complete_returns_the_calls_streamed_or_not(serve, tmp_path, stream):
    from core import llm

    t = serve(answers_file(tmp_path))
    ep = llm.Endpoint("openai/reference-teacher", api_base=t.base_url)
    r = llm.run_sync(llm.complete(ep, [{"role": "user", "content": Q}], stream=stream, tools=[FORECAST, WEATHER]))
    assert r.ok, r.error
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in r.tool_calls] == [
        ("get_forecast", {"city": "Paris", "days": 1}), ("get_weather", {"city": "Paris"})]
    assert all(c["id"].startswith("call_") for c in r.tool_calls)
    if stream:
        assert r.ttft_ms is not None and r.text == ""
