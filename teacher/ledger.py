"""Durable, shared ledger of paid teacher calls: never pay twice for the same request.

One row per request key (hash of the exact messages sent, model, api_base and sampling params).
A worker *claims* a row before calling the provider and commits the answer the moment it arrives,
so a rerun, or a restart after SIGKILL, skips everything already paid for, and two workers
sharing the ledger never call for the same key at once.

Row lifecycle:  (absent) -claim-> claimed -complete-> done
                                  claimed -fail-----> failed -claim-> claimed ...
A claim is stale (may be taken over) when its owner process is gone (same host, pid dead or
reused) or it is older than `lease_s` (other hosts). Taking over a stale claim is flagged
`in_doubt`: the dead owner may have been answered (and billed) without committing it, so the
caller resends with the same Idempotency-Key.

Backend: SQLAlchemy Core, so the same code runs on SQLite (default; WAL, one commit per answer,
which survives SIGKILL) and PostgreSQL (`postgresql+psycopg2://...`), where INSERT ... ON
CONFLICT DO NOTHING and compare-and-swap UPDATEs make claims race-free across hosts.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import Column, Float, MetaData, String, Table, Text, bindparam, create_engine, event, text

from core.base import stable_hash

BATCH_LEASE_S = 25 * 3600.0  # OpenAI's batch completion window is 24 h
_meta = MetaData()
ledger_table = Table(
    "teacher_ledger", _meta,
    Column("key", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # claimed | done | failed
    Column("owner", String(200)),
    Column("claimed_at", Float),
    Column("record", Text),  # JSON of the completed call (response, samples, tokens, cost, ...)
    Column("error", Text),
    Column("cost_usd", Float),
    Column("updated_at", Float),
)


def _create_table(engine) -> None:
    """create_all checks then creates, so two workers opening a new ledger at once can both try
    to create it; the loser's "already exists" is success."""
    from sqlalchemy.exc import DBAPIError

    for attempt in range(3):
        try:
            _meta.create_all(engine)
            return
        except DBAPIError as e:
            if "already exists" not in str(e).lower() and "duplicate" not in str(e).lower() or attempt == 2:
                raise
            time.sleep(0.05)


def _proc_start(pid: int) -> str | None:
    """Process start time (clock ticks since boot) from /proc: tells a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie (killed, not yet reaped) is dead for our purposes
        return None
    return fields[19]


def default_owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid) or time.time_ns()}"


def request_key(messages: list[dict], params: dict[str, Any]) -> str:
    """The ledger key: what was sent (messages after the teacher system prompt) plus where and how."""
    return stable_hash({"messages": messages, "params": params}, 32)


@dataclass
class Claim:
    state: str  # "claimed" (go ahead and call), "done" (record holds the answer), "busy" (another live worker has it)
    record: dict | None = None
    in_doubt: bool = False  # taken over from a dead owner that may already have been answered


class Ledger:
    """`Ledger(path_or_url)`; methods are synchronous and cheap (one short transaction each)."""

    def __init__(self, target: str | Path, *, owner: str | None = None, lease_s: float = 900.0):
        url = str(target)
        if "://" not in url:
            p = Path(url).expanduser().resolve()
            p.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{p}"
        self.url = url
        self.owner = owner or default_owner()
        self.lease_s = lease_s
        self.engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif self.engine.dialect.name != "postgresql":
            raise ValueError(f"ledger: unsupported database {self.engine.dialect.name!r} (use sqlite or postgresql)")
        _create_table(self.engine)
        self._conn = self.engine.connect()  # one connection per Ledger: replay runs on one event loop

    def close(self) -> None:
        self._conn.close()
        self.engine.dispose()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reads ----------------------------------------------------------------------------------
    def get_done(self, keys: Iterable[str]) -> dict[str, dict]:
        """Committed answers for these keys (chunked IN queries: one round trip per 500 keys)."""
        keys, out = list(keys), {}
        for i in range(0, len(keys), 500):
            with self._conn.begin():
                rows = self._conn.execute(_SQL["get_done"], {"keys": keys[i:i + 500]})
                out.update({k: json.loads(r) for k, r in rows})
        return out

    def stats(self) -> dict[str, int]:
        with self._conn.begin():
            return {s: n for s, n in self._conn.execute(_SQL["stats"])}

    # ---- claims ---------------------------------------------------------------------------------
    def claim(self, key: str, owner: str | None = None) -> Claim:
        owner, now = owner or self.owner, time.time()
        with self._conn.begin():
            if self._conn.execute(_SQL["claim"], {"key": key, "owner": owner, "now": now}).rowcount == 1:
                return Claim("claimed")
            row = self._conn.execute(_SQL["get"], {"key": key}).one()
            if row.status == "done":
                return Claim("done", json.loads(row.record))
            if row.status == "claimed" and row.owner != owner and not self._stale(row.owner, row.claimed_at, now):
                return Claim("busy")
            # Compare-and-swap on the row we read, so two takers cannot both win.
            cas = {"key": key, "status": row.status, "old_owner": row.owner or "", "old_at": row.claimed_at, "owner": owner, "now": now}
            if self._conn.execute(_SQL["take_over"], cas).rowcount == 1:
                return Claim("claimed", in_doubt=row.status == "claimed" and row.owner != owner)
            return Claim("busy")

    def _stale(self, owner: str | None, claimed_at: float | None, now: float) -> bool:
        if owner and owner.startswith("batch:"):  # held by a provider batch: trust it for its 24 h window
            return claimed_at is None or now - claimed_at > BATCH_LEASE_S
        host, _, rest = (owner or "").partition(":")
        pid, _, start = rest.partition(":")
        if host == socket.gethostname() and pid.isdigit():
            return _proc_start(int(pid)) != start  # dead, zombie, or the pid now belongs to someone else
        return claimed_at is None or now - claimed_at > self.lease_s

    def complete(self, key: str, record: dict, cost_usd: float = 0.0) -> None:
        """Commit an answer (durable once this returns): later claims of the key get it for free."""
        with self._conn.begin():
            self._conn.execute(_SQL["complete"], {"key": key, "owner": self.owner, "now": time.time(),
                                                  "record": json.dumps(record, ensure_ascii=False), "cost": cost_usd})

    def fail(self, key: str, error: str) -> None:
        """Give the claim back, keeping the reason; a later run retries the key."""
        with self._conn.begin():
            self._conn.execute(_SQL["fail"], {"key": key, "error": error, "now": time.time()})

    def reassign(self, keys: Iterable[str], owner: str) -> None:
        """Move our claims to another owner id (e.g. 'batch:<id>' once a batch holds them)."""
        keys = list(keys)
        for i in range(0, len(keys), 500):
            with self._conn.begin():
                self._conn.execute(_SQL["reassign"], {"keys": keys[i:i + 500], "owner": owner, "now": time.time()})


# Prebuilt statements: building SQLAlchemy constructs per call cost ~1 ms of CPU per answer; these
# compile once. The SQL (ON CONFLICT, excluded.*) is the same on SQLite >= 3.24 and PostgreSQL.
_SQL = {
    "claim": text("INSERT INTO teacher_ledger (key, status, owner, claimed_at, updated_at) "
                  "VALUES (:key, 'claimed', :owner, :now, :now) ON CONFLICT (key) DO NOTHING"),
    "get": text("SELECT status, owner, claimed_at, record FROM teacher_ledger WHERE key = :key"),
    "take_over": text("UPDATE teacher_ledger SET status = 'claimed', owner = :owner, claimed_at = :now, updated_at = :now "
                      "WHERE key = :key AND status = :status AND COALESCE(owner, '') = :old_owner AND claimed_at = :old_at"),
    "complete": text("INSERT INTO teacher_ledger (key, status, owner, claimed_at, record, cost_usd, updated_at) "
                     "VALUES (:key, 'done', :owner, :now, :record, :cost, :now) ON CONFLICT (key) DO UPDATE SET "
                     "status = 'done', record = excluded.record, cost_usd = excluded.cost_usd, error = NULL, updated_at = excluded.updated_at"),
    "fail": text("UPDATE teacher_ledger SET status = 'failed', error = :error, updated_at = :now WHERE key = :key AND status <> 'done'"),
    "get_done": text("SELECT key, record FROM teacher_ledger WHERE status = 'done' AND key IN :keys").bindparams(bindparam("keys", expanding=True)),
    "reassign": text("UPDATE teacher_ledger SET owner = :owner, claimed_at = :now WHERE status = 'claimed' AND key IN :keys")
    .bindparams(bindparam("keys", expanding=True)),
    "stats": text("SELECT status, COUNT(*) FROM teacher_ledger GROUP BY status"),
}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; commits survive SIGKILL
    cur.execute("PRAGMA synchronous=NORMAL")  # durable against process crash (not power loss), much faster than FULL
    cur.execute("PRAGMA busy_timeout=30000")  # two replays on one file wait for each other's commits
    cur.close()
