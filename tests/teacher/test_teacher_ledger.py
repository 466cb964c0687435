"""Ledger claims and commits on a real SQLite file, incl. two workers and a dead owner."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from teacher.ledger import Ledger, request_key


def test_key_covers_messages_model_base_and_sampling():
    m = [{"role": "user", "content": "hi"}]
    p = {"model": "openai/x", "api_base": "http://a/v1", "temperature": 0.0, "max_tokens": 10, "n": 1}
    k = request_key(m, p)
    assert k == request_key([dict(m[0])], dict(p))
    for change in ({"model": "openai/y"}, {"api_base": "http://b/v1"}, {"temperature": 0.5}, {"max_tokens": 11}, {"n": 2}):
        assert request_key(m, {**p, **change}) != k
    assert request_key([{"role": "system", "content": "t"}] + m, p) != k


def test_claim_complete_then_done_is_shared_and_durable(tmp_path):
    path = tmp_path / "l.db"
    a, b = Ledger(path, owner="hostA:1:1"), Ledger(path, owner="hostB:2:2")
    assert a.claim("k").state == "claimed"
    assert b.claim("k").state == "busy"  # a live worker elsewhere holds it: never pay twice
    a.complete("k", {"response": "r"}, 0.5)
    c = b.claim("k")
    assert c.state == "done" and c.record == {"response": "r"}
    assert sqlite3.connect(path).execute("pragma journal_mode").fetchone()[0] == "wal"
    assert Ledger(path).get_done(["k", "other"]) == {"k": {"response": "r"}}


def test_failed_claim_is_retried_later(tmp_path):
    a = Ledger(tmp_path / "l.db", owner="h:1:1")
    assert a.claim("k").state == "claimed"
    a.fail("k", "server_error: boom")
    b = Ledger(tmp_path / "l.db", owner="h2:2:2")
    claim = b.claim("k")
    assert claim.state == "claimed" and not claim.in_doubt
    assert b.stats() == {"claimed": 1}


def test_claim_of_a_dead_local_process_is_taken_over_in_doubt(tmp_path):
    path = tmp_path / "l.db"
    code = ("import sys; from teacher.ledger import Ledger; l = Ledger(sys.argv[1]); "
            "print(l.claim('k').state, l.owner)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "claimed"
    me = Ledger(path)
    assert me.owner != out[1]
    claim = me.claim("k")  # its owner exited without committing: it may have been billed
    assert claim.state == "claimed" and claim.in_doubt


def test_claim_of_a_remote_owner_expires_after_lease(tmp_path):
    path = tmp_path / "l.db"
    Ledger(path, owner="elsewhere:1:1").claim("k")
    assert Ledger(path, lease_s=3600).claim("k").state == "busy"
    assert Ledger(path, lease_s=0.0).claim("k").state == "claimed"


def _pg_url_or_skip():
    import uuid

    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({type(e).__name__})")
    conn.autocommit = True
    db = f"teacher_ledger_{uuid.uuid4().hex[:8]}"
    conn.cursor().execute(f'CREATE DATABASE "{db}"')
    return conn, db, f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"


def _race(target) -> None:
    """Two workers (threads, each its own Ledger/connection) claim the same 150 keys: each key is won once."""
    import threading

    keys = [f"k{i}" for i in range(150)]
    won: dict[str, list[str]] = {"A": [], "B": []}
    ledgers = {w: Ledger(target, owner=f"host{w}:1:1") for w in won}

    def work(w: str) -> None:
        for k in keys:
            if ledgers[w].claim(k).state == "claimed":
                won[w].append(k)
                ledgers[w].complete(k, {"by": w})

    threads = [threading.Thread(target=work, args=(w,)) for w in won]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won["A"] + won["B"]) == sorted(keys)  # every key paid for exactly once
    assert len(ledgers["A"].get_done(keys)) == 150
    for led in ledgers.values():
        led.close()


def test_two_workers_never_claim_the_same_key_sqlite(tmp_path):
    _race(tmp_path / "l.db")


@pytest.mark.postgres
def test_two_workers_never_claim_the_same_key_postgres():
    conn, db, url = _pg_url_or_skip()
    try:
        _race(url)
    finally:
        conn.cursor().execute(f'DROP DATABASE "{db}" WITH (FORCE)')
        conn.close()
