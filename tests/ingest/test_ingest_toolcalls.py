"""Tool-calling traffic through ingest: every well-formed conversation is kept canonical (tools,
calls with parsed arguments, tool results linked by id) from every source that carries them;
malformed ones are quarantined with one reason naming the message; dedup and PII see arguments
and tool results, and the tool set is part of a prompt's identity."""
import json

from ingest.config import IngestConfig
from ingest_testkit import assert_balanced, write_log

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
EMAIL = {"type": "function", "function": {"name": "send_email", "parameters": {
    "type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}, "required": ["to"]}}}


def wire(name="get_weather", args='{"city": "Paris"}', cid="call_a"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def convo(i, *calls, user=None, tools=(WEATHER, TIME), results=None, response="It is 18 degrees.", **extra):
    calls = calls or (wire(),)
    msgs = [{"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": user or f"Weather in Paris, question {i}?"},
            {"role": "assistant", "content": None, "tool_calls": list(calls)}]
    if results is None:
        results = [{"role": "tool", "tool_call_id": c["id"], "content": '{"temp_c": 18}'} for c in calls if isinstance(c, dict) and c.get("id")]
    rec = {"id": f"t{i}", "messages": msgs + results, "response": response, "timestamp": f"2026-10-01T00:00:{i:02d}Z", **extra}
    if tools is not None:
        rec["tools"] = list(tools)
    return rec


def answer_call(i, name="get_weather", args='{"city": "Rome"}', tools=(WEATHER,), user=None):
    """A prompt whose logged answer is a call (content null), as a chat completion message."""
    return {"id": f"a{i}", "messages": [{"role": "user", "content": user or f"Weather in Rome? ({i})"}], "tools": list(tools),
            "response": {"role": "assistant", "content": None, "tool_calls": [wire(name, args, f"call_r{i}")]},
            "timestamp": f"2026-10-01T00:01:{i:02d}Z"}


WELL_FORMED = [
    convo(1),                                                                     # one call, content null, result
    convo(2, wire(), wire("get_time", "{}", "call_b")),                           # parallel calls
    convo(3, wire(args={"city": "Paris"})),                                       # arguments already parsed
    convo(4, wire("get_time", "", "call_t")),                                     # no-argument tool, "" arguments
    convo(5, results=[{"role": "tool", "tool_call_id": "call_a", "content": {"temp_c": 18}}]),  # JSON result
    convo(6, tool_choice={"type": "function", "function": {"name": "get_weather"}}),
    {"id": "t7", "messages": [{"role": "user", "content": "Weather in Oslo?"},                  # legacy functions
                              {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}},
                              {"role": "function", "name": "get_weather", "content": "2C"}],
     "functions": [WEATHER["function"]], "function_call": "auto", "response": "2 degrees."},
    answer_call(8),                                                               # the answer is a call
    {"id": "t9", "messages": [{"role": "user", "content": "What time is it?"},    # answer = final assistant turn
                              {"role": "assistant", "content": "Let me check.", "tool_calls": [wire("get_time", "{}", "call_z")]}],
     "tools": [TIME]},
    {"id": "t10", "messages": [{"role": "user", "content": "Just say hi"}], "tools": [WEATHER], "response": "Hi!"},  # text answer
]

MALFORMED = [
    (convo(11, wire(args='{"city": "Paris"')), "bad_tool_arguments", "message 3 tool call 1 (get_weather) arguments are not valid JSON"),
    (convo(12, wire("get_wether")), "undeclared_tool", "message 3 tool call 1 names 'get_wether'"),
    (convo(13, tools=None), "undeclared_tool", "it declares no tools"),
    (convo(14, results=[{"role": "tool", "tool_call_id": "call_zz", "content": "18C"}]), "bad_tool_result", "message 4 answers tool_call_id 'call_zz'"),
    (convo(15, tools=[WEATHER, WEATHER]), "bad_tools", "tool 'get_weather' is declared twice"),
    (convo(16, tool_choice="always"), "bad_tool_choice", "tool_choice 'always'"),
    (answer_call(17, name="get_news"), "undeclared_tool", "answer tool call 1 names 'get_news'"),
    (answer_call(18, args="{city: Rome}"), "bad_tool_arguments", "answer tool call 1 (get_weather) arguments are not valid JSON"),
    (convo(19, wire(args='{"city": "\\ud800"}')), "invalid_unicode", "message 3 tool calls holds a lone surrogate"),
    ({"id": "t20", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}], "tools": [WEATHER]},
     "bad_messages", "message 2 content is NoneType"),                            # null content and no calls
]


def test_hostile_tool_lines_keep_every_well_formed_conversation_and_quarantine_the_rest(runner, tmp_path):
    lines = [x for pair in zip(WELL_FORMED, [m[0] for m in MALFORMED]) for x in pair]
    log = write_log(tmp_path / "log.jsonl", lines)
    c = runner.run(runner.cfg(log, holdout_fraction=0.0, dedup={"near_duplicates": False}))
    assert_balanced(c)
    assert (c["read"], c["kept"], c["quarantined"]) == (len(lines), len(WELL_FORMED), len(MALFORMED)), c
    q = {row["position"]: row["reason"] for row in runner.out("quarantine")}
    for k, (_, code, detail) in enumerate(MALFORMED):
        reason = q[2 * k + 2]
        assert reason.startswith(f"{code}: ") and detail in reason, (k, reason)
    assert sum(c["quarantined_by_reason"].values()) == len(MALFORMED)

    recs = {r["id"]: r for r in runner.out("train")}
    assert set(recs) == {r["id"] for r in WELL_FORMED}
    t1 = recs["t1"]
    assert t1["tools"] == [WEATHER, TIME] and "tool_choice" not in t1 and "tool_calls" not in t1
    assert t1["messages"][2] == {"role": "assistant", "content": None,
                                 "tool_calls": [{"id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}}]}
    assert t1["messages"][3] == {"role": "tool", "tool_call_id": "call_a", "content": '{"temp_c": 18}'}
    assert t1["response"] == "It is 18 degrees."
    assert [c["name"] for c in recs["t2"]["messages"][2]["tool_calls"]] == ["get_weather", "get_time"]
    assert recs["t4"]["messages"][2]["tool_calls"][0]["arguments"] == {}
    assert recs["t5"]["messages"][3]["content"] == '{"temp_c": 18}'
    assert recs["t6"]["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    t7 = recs["t7"]
    assert t7["tools"] == [WEATHER] and t7["tool_choice"] == "auto"
    assert t7["messages"][2] == {"role": "tool", "tool_call_id": "call_2_1", "name": "get_weather", "content": "2C"}
    a8 = recs["a8"]
    assert a8["response"] is None and a8["tool_calls"] == [{"id": "call_r8", "name": "get_weather", "arguments": {"city": "Rome"}}]
    t9 = recs["t9"]
    assert t9["messages"] == [{"role": "user", "content": "What time is it?"}]
    assert t9["response"] == "Let me check." and t9["tool_calls"] == [{"id": "call_z", "name": "get_time", "arguments": {}}]
    assert recs["t10"]["response"] == "Hi!" and "tool_calls" not in recs["t10"]


def test_tools_are_part_of_a_prompts_identity(runner, tmp_path):
    same_q = "Weather in Paris and the time, please?"
    rows = [
        answer_call(1, user=same_q, tools=(WEATHER, TIME)),
        answer_call(2, user=same_q, tools=(WEATHER,)),           # other tool set: not a duplicate
        answer_call(3, user=same_q, tools=(TIME, WEATHER)),      # same set, other order: a duplicate
        convo(4, user=same_q, tools=(WEATHER, TIME)),
        convo(5, wire(cid="call_other"), user=same_q),           # same conversation, other call id: a duplicate
        convo(6, wire(args='{"city": "Lyon"}'), user=same_q),    # other arguments: not one
        convo(7, user=same_q, results=[{"role": "tool", "tool_call_id": "call_a", "content": "raining"}]),  # other result
    ]
    log = write_log(tmp_path / "log.jsonl", rows)
    c = runner.run(runner.cfg(log, holdout_fraction=0.0, dedup={"near_duplicates": False}))
    assert_balanced(c)
    dropped = {d["id"]: d["of"] for d in runner.out("dropped")}
    assert dropped == {"a3": "a1", "t5": "t4"}, dropped
    assert c["kept"] == 5


def test_near_dedup_sees_arguments_and_tool_results(runner, tmp_path):
    long_user = "Please look up the weather forecast for the coming week in the city I name in the call, thanks a lot"
    big = '{"forecast": "' + "sunny with a light breeze in the afternoon and clear skies at night, " * 4 + '"}'
    rows = [convo(1, user=long_user, results=[{"role": "tool", "tool_call_id": "call_a", "content": big}]),
            convo(2, user=long_user, results=[{"role": "tool", "tool_call_id": "call_a", "content": big.replace("breeze", "breezes")}]),
            convo(3, user=long_user, results=[{"role": "tool", "tool_call_id": "call_a", "content": '{"error": "city not found"}'}])]
    log = write_log(tmp_path / "log.jsonl", rows)
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert_balanced(c)
    assert {d["id"]: (d["reason"], d["of"]) for d in runner.out("dropped")} == {"t2": ("near_duplicates", "t1")}
    assert c["kept"] == 2


def test_pii_is_redacted_in_arguments_results_and_answer_calls(runner, tmp_path):
    rec = {"id": "p1", "tools": [EMAIL], "messages": [
        {"role": "user", "content": "Mail ann@example.com the card 4111 1111 1111 1111 status"},
        {"role": "assistant", "content": None, "tool_calls": [wire("send_email", json.dumps({"to": "ann@example.com", "body": "card 4111111111111111"}))]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"sent_to": "ann@example.com", "cc": "bob@example.org"}'},
        {"role": "user", "content": "and bob too"}],
        "response": {"role": "assistant", "content": None, "tool_calls": [wire("send_email", '{"to": "bob@example.org"}', "call_b")]}}
    log = write_log(tmp_path / "log.jsonl", [rec])
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    out = (runner.rd.path / "ingest" / "train.jsonl").read_text()
    assert "example.com" not in out and "example.org" not in out and "4111" not in out
    r = runner.out("train")[0]
    assert r["messages"][1]["tool_calls"][0]["arguments"] == {"to": "<EMAIL_1>", "body": "card <CARD_1>"}
    assert r["messages"][2]["content"] == '{"sent_to": "<EMAIL_1>", "cc": "<EMAIL_2>"}'
    assert r["tool_calls"][0]["arguments"] == {"to": "<EMAIL_2>"}
    assert r["tools"] == [EMAIL]                                   # schemas are not user data
    assert c["redactions_by_type"] == {"email": 5, "card": 2}


def test_quarantined_tool_lines_are_redacted_too(runner, tmp_path):
    log = write_log(tmp_path / "log.jsonl", [answer_call(1, args='{"city": "x", "to": "ann@example.com"')])
    runner.run(runner.cfg(log))
    q = runner.out("quarantine")[0]
    assert q["reason"].startswith("bad_tool_arguments") and "ann@example.com" not in q["raw"] and "<EMAIL_1>" in q["raw"]


# ---- sources ------------------------------------------------------------------------------------

def test_openai_stored_completions_keep_tools_and_calls(runner):
    from test_ingest_source_openai import StoreServer, completion, src_cfg

    c1 = completion(1, 1790000000)
    c1["tools"] = [WEATHER]
    c1["tool_choice"] = "required"
    c1["_input"] = [{"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": None, "tool_calls": [wire()]},
                    {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
                    {"role": "user", "content": "And in Rome?"}]
    c1["choices"][0].update(finish_reason="tool_calls", message={"role": "assistant", "content": None, "refusal": None,
                                                                 "tool_calls": [wire(args='{"city": "Rome"}', cid="call_b")]})
    c2 = completion(2, 1790000001)
    c2["choices"][0]["message"]["tool_calls"] = [wire("get_news", "{}", "call_n")]   # calls a tool it never declared
    with StoreServer([c1, c2]) as srv:
        c = runner.run(src_cfg(srv.base_url))
    assert_balanced(c)
    assert (c["kept"], c["quarantined_by_reason"]) == (1, {"undeclared_tool": 1})
    r = (runner.out("train") + runner.out("holdout"))[0]
    assert r["tools"] == [WEATHER] and r["tool_choice"] == "required" and r["response"] is None
    assert r["messages"][1]["tool_calls"] == [{"id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}}]
    assert r["messages"][2] == {"role": "tool", "tool_call_id": "call_a", "content": "18C"}
    assert r["tool_calls"] == [{"id": "call_b", "name": "get_weather", "arguments": {"city": "Rome"}}]


def test_langfuse_generations_keep_tools_and_calls(runner, tmp_path):
    from test_ingest_source_langfuse import obs, run

    doc = {"data": [
        obs(1, input={"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]},
            output={"role": "assistant", "content": None, "tool_calls": [wire()]}),
        obs(2, input={"messages": [{"role": "user", "content": "Time?"}], "functions": [TIME["function"]]},
            modelParameters={"temperature": 0, "tool_choice": "auto"},
            output={"role": "assistant", "content": None, "function_call": {"name": "get_time", "arguments": "{}"}}),
        obs(3, input={"messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER]},
            output={"role": "assistant", "content": None, "tool_calls": [wire(args="not json")]}),
    ]}
    c = run(runner, tmp_path, doc)
    assert_balanced(c)
    assert (c["kept"], c["quarantined_by_reason"]) == (2, {"bad_tool_arguments": 1})
    recs = {r["id"]: r for r in runner.out("train")}
    assert recs["obs-1"]["tools"] == [WEATHER] and recs["obs-1"]["tool_calls"][0]["arguments"] == {"city": "Paris"}
    assert recs["obs-2"]["tools"] == [TIME] and recs["obs-2"]["tool_choice"] == "auto"
    assert recs["obs-2"]["tool_calls"][0]["name"] == "get_time" and recs["obs-2"]["response"] is None


def test_sql_source_reads_a_tools_column(runner, tmp_path):
    import sqlite3

    db = tmp_path / "log.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE log (id text, messages text, response text, tools text)")
    rows = [("s1", json.dumps([{"role": "user", "content": "Weather in Paris?"}]),
             json.dumps({"role": "assistant", "content": None, "tool_calls": [wire()]}), json.dumps([WEATHER])),
            ("s2", json.dumps([{"role": "user", "content": "Hi"}]), "Hello!", None),
            ("s3", json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [wire()]},
                               {"role": "tool", "tool_call_id": "call_a", "content": "x"}]), "ok", None)]
    con.executemany("INSERT INTO log VALUES (?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    cfg = IngestConfig.model_validate({"source": {"kind": "sql", "url": f"sqlite:///{db}", "query": "SELECT * FROM log",
                                                  "columns": {"messages": "messages", "response": "response", "tools": "tools"}},
                                       "parquet": False, "holdout_fraction": 0.0})
    c = runner.run(cfg)
    assert_balanced(c)
    assert (c["kept"], c["quarantined_by_reason"]) == (2, {"undeclared_tool": 1})
    recs = {r["id"]: r for r in runner.out("train")}
    assert recs["s1"]["tools"] == [WEATHER] and recs["s1"]["tool_calls"][0]["name"] == "get_weather"
    assert "tools" not in recs["s2"]


def test_bfcl_example_log_is_ingested_whole(runner):
    """The bundled BFCL log: 1,000 tool-calling requests, none lost; the 96 questions asked again
    with another tool set are not duplicates."""
    from pathlib import Path

    log = Path(__file__).resolve().parents[2] / "examples" / "bfcl" / "prompt_log.jsonl.gz"
    c = runner.run(runner.cfg(log))
    assert_balanced(c)
    assert (c["read"], c["kept"], c["quarantined"], c["duplicates"], c["near_duplicates"]) == (1000, 1000, 0, 0, 0), c
    recs = runner.out("train") + runner.out("holdout")
    assert all(r["tools"] and r["tool_calls"] and r["response"] is None for r in recs)
    assert sum(len(r["tool_calls"]) > 1 for r in recs) > 300


def test_parquet_copy_keeps_the_tool_fields(runner, tmp_path):
    from datasets import Dataset

    log = write_log(tmp_path / "log.jsonl", [convo(1), answer_call(2), {"id": "plain", "prompt": "hello"}])
    runner.run(runner.cfg(log, holdout_fraction=0.0, parquet=True))
    ds = {r["id"]: r for r in Dataset.from_parquet(str(runner.rd.path / "ingest" / "train.parquet"))}
    t1 = ds["t1"]
    assert json.loads(t1["tools"]) == [WEATHER, TIME] and t1["tool_calls"] is None
    assert json.loads(t1["messages"][2]["tool_calls"]) == [{"id": "call_a", "name": "get_weather", "arguments": {"city": "Paris"}}]
    assert t1["messages"][2]["content"] is None and t1["messages"][3]["tool_call_id"] == "call_a"
    assert json.loads(ds["a2"]["tool_calls"])[0]["arguments"] == {"city": "Rome"}
    assert ds["plain"]["tools"] is None and ds["plain"]["messages"] == [{"role": "user", "content": "hello", "tool_calls": None, "tool_call_id": None}]


def test_sdk_dumps_with_null_tool_fields_stay_plain_records(runner, tmp_path):
    """openai SDK model_dump()s carry tool_calls / function_call: null on every message."""
    nulls = {"tool_calls": None, "function_call": None, "refusal": None}
    row = {"id": "s1", "messages": [{"role": "system", "content": "Be brief.", **nulls}, {"role": "user", "content": "hi", **nulls},
                                    {"role": "assistant", "content": "hello", **nulls}], "tools": None, "tool_choice": None}
    log = write_log(tmp_path / "log.jsonl", [row])
    c = runner.run(runner.cfg(log, holdout_fraction=0.0))
    assert (c["kept"], c["quarantined"]) == (1, 0), c
    r = runner.out("train")[0]
    assert r["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert r["response"] == "hello" and not {"tools", "tool_choice", "tool_calls"} & set(r)
