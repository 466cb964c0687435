"""The generic SQL source, against a real SQLite database file (and the SQLAlchemy URL rules)."""
import json
import sqlite3

import pytest

from core.base import DistillError
from ingest.config import IngestConfig
from ingest_testkit import assert_balanced


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "logs.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE calls (call_id TEXT, created_at TEXT, prompt TEXT, chat TEXT, answer TEXT, meta TEXT)")
    rows = [(f"c{i}", f"2026-10-0{1 + i // 10}T00:00:{i % 10:02d}Z", f"sql prompt {i} about {i * 3}",
             json.dumps([{"role": "user", "content": f"sql chat {i} about {i * 3}"}]), f"answer {i}",
             json.dumps({"feature": "sql"})) for i in range(20)]
    rows.append(("c-bad", "2026-10-03T00:00:00Z", "x", "[not json", "a", "{}"))
    con.executemany("INSERT INTO calls VALUES (?,?,?,?,?,?)", rows)
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def cfg(url, query="SELECT * FROM calls", **cols) -> IngestConfig:
    columns = {"id": "call_id", "messages": "chat", "response": "answer", "timestamp": "created_at", "metadata": "meta"}
    columns.update(cols)
    return IngestConfig.model_validate({"source": {"kind": "sql", "url": url, "query": query, "columns": columns,
                                                   "batch_size": 7}, "parquet": False, "holdout_fraction": 0.0})


def test_column_mapping_and_bad_rows(runner, db):
    c = runner.run(cfg(db))
    assert_balanced(c)
    assert (c["read"], c["kept"], c["quarantined_by_reason"]) == (21, 20, {"malformed_json": 1})
    r = runner.out("train")[3]
    assert r == {"id": "c3", "messages": [{"role": "user", "content": "sql chat 3 about 9"}], "response": "answer 3",
                 "model": None, "timestamp": "2026-10-01T00:00:03Z", "metadata": {"feature": "sql"}, "split": "train"}
    q = runner.out("quarantine")[0]
    assert (q["id"], q["position"]) == ("c-bad", 21) and "column chat" in q["reason"]


def test_prompt_column_and_watermark_parameter(runner, db):
    q = "SELECT * FROM calls WHERE :watermark IS NULL OR created_at > :watermark ORDER BY created_at"
    c1 = cfg(db, q, messages=None, prompt="prompt")
    c1.window.incremental = True
    assert runner.run(c1)["read"] == 21
    assert runner.out("train")[0]["messages"] == [{"role": "user", "content": "sql prompt 0 about 0"}]
    # The watermark is now the newest row: a second run reads nothing new.
    c = runner.run(c1)
    assert (c["read"], c["kept"]) == (0, 0)


def test_unknown_column_and_bad_url(runner, db):
    with pytest.raises(DistillError, match="no column 'nope'"):
        runner.run(cfg(db, messages="nope"))
    with pytest.raises(DistillError, match="not a valid SQLAlchemy URL"):
        runner.run(cfg("not a url"))
    with pytest.raises(DistillError, match="cannot read from database sqlite:///.*no such table"):
        runner.run(cfg(db, "SELECT * FROM missing"))
