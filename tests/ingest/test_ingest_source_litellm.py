"""LiteLLM proxy spend logs in a real PostgreSQL (127.0.0.1:5432, database `test`).

Each test creates its own schema holding a "LiteLLM_SpendLogs" table shaped like the proxy's
(JSON columns as jsonb, "startTime" as timestamp) and drops it afterwards.
"""
import json
import re
import uuid
from datetime import datetime, timedelta

import pytest

from core.base import DistillError
from ingest.config import IngestConfig
from ingest_testkit import assert_balanced

pytestmark = pytest.mark.postgres


def _pg_url() -> str | None:
    from sqlalchemy import create_engine, text

    for user in ("postgres", "root"):
        url = f"postgresql+psycopg2://{user}@127.0.0.1:5432/test"
        try:
            eng = create_engine(url, connect_args={"connect_timeout": 3})
            with eng.connect() as c:
                c.execute(text("select 1"))
            eng.dispose()
            return url
        except Exception:
            continue
    return None


@pytest.fixture(scope="module")
def pg_url():
    url = _pg_url()
    if url is None:
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432 (database test, user postgres/root, trust auth)")
    return url


@pytest.fixture
def spend_table(pg_url):
    from sqlalchemy import create_engine, text

    schema = f"ingest_test_{uuid.uuid4().hex[:8]}"
    eng = create_engine(pg_url)
    with eng.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
        c.execute(text(f'''CREATE TABLE "{schema}"."LiteLLM_SpendLogs" (
            request_id text PRIMARY KEY, call_type text, api_key text, spend double precision,
            total_tokens int, prompt_tokens int, completion_tokens int,
            "startTime" timestamp(3), "endTime" timestamp(3), model text, model_group text, api_base text,
            "user" text, metadata jsonb DEFAULT '{{}}', request_tags jsonb DEFAULT '[]',
            messages jsonb DEFAULT '{{}}', response jsonb DEFAULT '{{}}', proxy_server_request jsonb DEFAULT '{{}}',
            status text)'''))

    def insert(rows):
        with eng.begin() as c:
            for r in rows:
                cols = ", ".join(f'"{k}"' for k in r)
                vals = ", ".join(f":{k}" for k in r)
                c.execute(text(f'INSERT INTO "{schema}"."LiteLLM_SpendLogs" ({cols}) VALUES ({vals})'),
                          {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})

    yield schema, insert
    with eng.begin() as c:
        c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    eng.dispose()


T0 = datetime(2026, 10, 1, 12, 0, 0)


def row(i: int, user: str | None = None, **kw) -> dict:
    body = {"model": "gpt-4o", "metadata": {"feature": "router"},
            "messages": [{"role": "system", "content": "Route it."},
                         {"role": "user", "content": user or f"spend log question {i} about {i * 17}"}]}
    resp = {"id": f"chatcmpl-{i}", "object": "chat.completion", "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f"route {i}"}}]}
    r = {"request_id": f"lt-{i}", "call_type": "acompletion", "model": "gpt-4o", "status": "success",
         "startTime": T0 + timedelta(minutes=i), "proxy_server_request": body, "response": resp,
         "request_tags": ["prod"], "metadata": {"user_api_key": "hashed-secret"}}
    r.update(kw)
    return r


def truncated(text: str) -> str:
    # What litellm writes (spend_tracking_utils._sanitize_request_body_for_spend_logs_payload).
    return text[:716] + f"... (litellm_truncated skipped {len(text) - 2048} chars. note) ..." + text[-1331:]


def cfg_for(url, schema, **kw) -> IngestConfig:
    return IngestConfig.model_validate({"source": {"kind": "litellm_spend_logs", "url": url, "db_schema": schema, **kw},
                                        "parquet": False, "holdout_fraction": 0.0})


def test_reads_chat_rows_and_quarantines_truncated_ones(runner, pg_url, spend_table):
    schema, insert = spend_table
    long_text = "please help " * 400
    bad_body = row(3)["proxy_server_request"]
    bad_body["messages"][1]["content"] = truncated(long_text)
    insert([row(1), row(2), row(3, proxy_server_request=bad_body),
            row(4, response={"choices": [{"message": {"content": truncated(long_text)}}]}),
            row(5, status="failure", response={}),
            row(6, call_type="aembedding"),
            row(7, user="the word litellm_truncated alone is fine")])
    c = runner.run(cfg_for(pg_url, schema))
    assert_balanced(c)
    assert c["read"] == 6  # the embedding row is filtered in SQL
    assert c["quarantined_by_reason"] == {"litellm_truncated": 2}
    assert c["skipped_by_reason"] == {"request_failed": 1}
    assert c["kept"] == 3
    q = runner.out("quarantine")
    assert sorted(x["id"] for x in q) == ["lt-3", "lt-4"]
    assert all(x["source"] == pg_url for x in q) and all("LiteLLM truncated" in x["reason"] for x in q)
    recs = {r["id"]: r for r in runner.out("train")}
    assert set(recs) == {"lt-1", "lt-2", "lt-7"}
    r1 = recs["lt-1"]
    assert r1["messages"][1] == {"role": "user", "content": "spend log question 1 about 17"}
    assert r1["response"] == "route 1" and r1["timestamp"] == "2026-10-01T12:01:00Z"
    assert r1["metadata"] == {"feature": "router", "litellm_call_type": "acompletion", "tags": ["prod"]}
    assert "hashed-secret" not in (runner.rd.path / "ingest" / "train.jsonl").read_text()


def test_incremental_reads_only_newer_rows(runner, pg_url, spend_table):
    schema, insert = spend_table
    insert([row(i) for i in range(1, 4)])
    cfg = cfg_for(pg_url, schema)
    cfg.window.incremental = True
    assert runner.run(cfg)["read"] == 3
    insert([row(10)])
    c = runner.run(cfg)
    assert (c["read"], c["kept"], c["outside_window"]) == (1, 1, 0)
    assert runner.out("train")[0]["id"] == "lt-10"


def test_missing_table_and_bad_host_are_clear_errors(runner, pg_url, spend_table):
    schema, _ = spend_table
    with pytest.raises(DistillError, match=re.escape(f"table {schema}.Nope not found in {pg_url}")):
        runner.run(cfg_for(pg_url, schema, table="Nope"))
    bad = "postgresql+psycopg2://u:hunter2@127.0.0.1:1/test"
    with pytest.raises(DistillError) as e:
        runner.run(cfg_for(bad, schema))
    assert "127.0.0.1:1" in str(e.value) and "hunter2" not in str(e.value)
    assert not (runner.rd.path / "ingest").exists()


def test_older_table_without_status_or_request_body(runner, pg_url, spend_table):
    from sqlalchemy import create_engine, text

    schema, _ = spend_table
    eng = create_engine(pg_url)
    with eng.begin() as c:
        c.execute(text(f'CREATE TABLE "{schema}"."OldLogs" (request_id text, call_type text, '
                       f'"startTime" timestamp(3), model text, messages jsonb, response jsonb)'))
        c.execute(text(f'INSERT INTO "{schema}"."OldLogs" VALUES (:i, :ct, :t, :m, :msgs, :r)'),
                  {"i": "old-1", "ct": "completion", "t": T0, "m": "gpt-4o",
                   "msgs": json.dumps([{"role": "user", "content": "old style prompt"}]), "r": json.dumps("plain answer")})
    eng.dispose()
    c = runner.run(cfg_for(pg_url, schema, table="OldLogs"))
    assert (c["read"], c["kept"]) == (1, 1)
    r = runner.out("train")[0]
    assert (r["messages"], r["response"]) == ([{"role": "user", "content": "old style prompt"}], "plain answer")


def test_tool_calling_rows_keep_tools_and_calls(runner, pg_url, spend_table):
    from test_ingest_toolcalls import TIME, WEATHER, wire

    schema, insert = spend_table
    r1 = row(1)
    r1["proxy_server_request"]["tools"] = [WEATHER, TIME]
    r1["proxy_server_request"]["tool_choice"] = "auto"
    r1["proxy_server_request"]["messages"] += [{"role": "assistant", "content": None, "tool_calls": [wire("get_time", "{}", "call_t")]},
                                               {"role": "tool", "tool_call_id": "call_t", "content": "12:00"}]
    r1["response"]["choices"][0].update(finish_reason="tool_calls", message={"role": "assistant", "content": None,
                                                                             "tool_calls": [wire(cid="call_w")]})
    r2 = row(2)
    r2["response"]["choices"][0]["message"]["tool_calls"] = [wire()]             # no tools in the request
    insert([r1, r2])
    c = runner.run(cfg_for(pg_url, schema))
    assert_balanced(c)
    assert (c["kept"], c["quarantined_by_reason"]) == (1, {"undeclared_tool": 1})
    rec = runner.out("train")[0]
    assert rec["tools"] == [WEATHER, TIME] and rec["tool_choice"] == "auto" and rec["response"] is None
    assert rec["messages"][2]["tool_calls"] == [{"id": "call_t", "name": "get_time", "arguments": {}}]
    assert rec["tool_calls"] == [{"id": "call_w", "name": "get_weather", "arguments": {"city": "Paris"}}]
