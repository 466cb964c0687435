"""Batch mode: replay through the provider's Batch API (OpenAI files + batches), about half price.

For non-urgent replays. Prompts already in the ledger are skipped; the rest are claimed, written
as one JSONL of /v1/chat/completions requests (custom_id = ledger key), uploaded, and submitted.
The batch id is saved in replay/batch.json at once, so a rerun after a crash or a timeout
resumes polling the same batch instead of paying for a second one. Results are committed to the
ledger as they are downloaded; per-request errors become failed records with their reason.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from core import llm
from core.base import DistillError, write_json
from core.rundir import RunDir
from teacher.client import TeacherClient, TeacherUnreachable
from teacher.config import TeacherConfig
from teacher.estimate import expected_costs
from teacher.from_config import teacher_messages
from teacher.ledger import request_key

TERMINAL = {"completed", "failed", "expired", "cancelled"}
# Under teacher.max_budget_usd, money the estimate over-reserved is spent on further batches,
# at most this many in one replay (each takes the provider's turnaround, up to 24 h).
BATCH_ROUNDS = 3


def _openai_client(cfg: TeacherConfig):
    from openai import OpenAI

    key = llm.api_key_for(cfg.model, cfg.api_base, cfg.api_key.get_secret_value() if cfg.api_key else None)
    return OpenAI(base_url=cfg.api_base, api_key=key, timeout=max(60.0, cfg.timeout_s), max_retries=cfg.max_retries)


def _provider_model(model: str) -> str:
    provider, _, name = model.partition("/")
    if not name:
        return model
    if provider not in ("openai", "azure"):
        raise DistillError(f"teacher.mode=batch speaks the OpenAI Batch API; model {model!r} is not an openai/ model")
    return name


def record_from_body(key: str, body: dict, client: TeacherClient, latency_ms: float) -> dict:
    choices = body.get("choices") or []
    samples = [(c.get("message") or {}).get("content") for c in choices]
    if not samples or samples[0] is None:
        return client.failed_record(key, "malformed_response: batch result has no choices/content", 1, latency_ms)
    usage = body.get("usage") or {}
    pt, ct = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return client.ok_record(key, samples, choices[0].get("finish_reason"), pt, ct, latency_ms, 1)


def replay_batch(cfg: TeacherConfig, rd: RunDir, rows: list[dict], client: TeacherClient, progress) -> list[dict]:
    import openai

    try:
        return _replay_batch(cfg, rd, rows, client, progress)
    except openai.APIConnectionError as e:
        raise TeacherUnreachable(f"teacher unreachable at {cfg.api_base or 'the OpenAI API'} (batch mode): {e}") from None
    except openai.APIStatusError as e:
        raise DistillError(f"batch API at {cfg.api_base or 'the OpenAI API'} refused a request ({e.status_code}): {e.message}; "
                           f"a saved batch id is in {rd.replay_batch_state} (delete it to submit afresh)") from None


def _replay_batch(cfg: TeacherConfig, rd: RunDir, rows: list[dict], client: TeacherClient, progress) -> list[dict]:
    ledger = client.ledger
    msgs = [teacher_messages(r["messages"], cfg) for r in rows]
    params = client.params(temperature=cfg.temperature, max_tokens=cfg.max_tokens, n=cfg.n)
    keys = [request_key(m, params) for m in msgs]
    found: dict[str, dict] = {}  # key -> record (ledger hits, then batch results)
    prior = 0.0  # what the answers already in the ledger cost when they were paid for
    for k, rec in ledger.get_done(keys).items():
        prior += rec.get("cost_usd") or 0.0
        found[k] = {**rec, "key": k, "ledger_hit": True, "cost_usd": 0.0}
    for k in found:
        progress.update(found[k])
    state_path = rd.replay_batch_state
    oa = _openai_client(cfg)
    if state_path.is_file():  # resume the batch a previous run submitted (and paid for)
        _collect(cfg, oa, json.loads(state_path.read_text()), state_path, client, found, progress)
    first: dict[str, list[dict]] = {}
    row_of: dict[str, dict] = {}
    for k, m, r in zip(keys, msgs, rows):
        if k not in found:
            first.setdefault(k, m)
            row_of.setdefault(k, r)
    budget = Budget(cfg, client, row_of, prior + progress.spend)
    pending = list(first)
    rounds = 0
    while pending and rounds < BATCH_ROUNDS:
        # A submitted batch cannot be stopped: it is sized to what the budget has left, by the
        # estimate; the rest waits for the next batch (after this one's real bill is known).
        size = budget.fits(pending)
        if not size:
            break
        unsent: dict[str, list[dict]] = {}
        for k in pending[:size]:
            claim = ledger.claim(k)
            if claim.state == "claimed":
                unsent[k] = first[k]
            elif claim.state == "done":  # another worker finished it since we looked
                found[k] = {**claim.record, "key": k, "ledger_hit": True, "cost_usd": 0.0}
                progress.update(found[k])
        pending = pending[size:]
        if not unsent:
            continue
        rounds += 1
        try:
            state = _submit(cfg, oa, rd, unsent, params)
        except BaseException:
            for k in unsent:  # nothing was submitted: give the claims back
                ledger.fail(k, "batch_submit_failed")
            raise
        write_json(state_path, state)  # before anything else can fail: the batch is paid for now
        ledger.reassign(unsent, f"batch:{state['batch_id']}")
        spent = progress.spend
        _collect(cfg, oa, state, state_path, client, found, progress)
        budget.spent += progress.spend - spent
    for k in pending:  # over the budget: not sent, no claim held; a rerun with a higher budget sends them
        found[k] = client.failed_record(k, f"over_budget: teacher.max_budget_usd ${cfg.max_budget_usd:g} would be exceeded "
                                           "(batch sized by the cost estimate); rerun with a higher budget to continue", 0, 0.0)
        progress.update(found[k])
    out, seen = [], set()
    for k in keys:
        rec = found.get(k)
        if rec is None:  # claimed by another live worker: say so rather than drop it
            rec = found[k] = client.failed_record(k, "not_replayed: another worker holds this prompt's claim; rerun to pick it up", 0, 0.0)
            progress.update(rec)
        elif k in seen:  # a repeated prompt: counted on the bar once per copy
            progress.update({**rec, "cost_usd": 0.0})
        seen.add(k)
        out.append(rec)
    return _dedupe_costs(keys, out)


class Budget:
    """teacher.max_budget_usd in batch mode: the answers already paid for (ledger hits, at their
    recorded price) count against it, and each batch holds only the prompts whose expected
    cost (teacher/estimate.py) fits what is left."""

    def __init__(self, cfg: TeacherConfig, client: TeacherClient, prompts: dict[str, dict], spent: float):
        self.limit, self.spent = cfg.max_budget_usd, spent
        self.cost: dict[str, float] = {}
        if self.limit is None:
            return
        costs = expected_costs(cfg, list(prompts.values()), client.pricer)
        if costs is None:
            raise DistillError(f"teacher.max_budget_usd needs a price for {cfg.model!r} in batch mode (a submitted batch cannot be "
                               "stopped, so it is sized by its expected cost): set teacher.input_cost_per_token and output_cost_per_token")
        self.cost = dict(zip(prompts, costs))

    def fits(self, pending: list[str]) -> int:
        """How many of `pending` (from the front) what is left of the budget pays for."""
        if self.limit is None:
            return len(pending)
        left, n = self.limit - self.spent, 0
        for k in pending:
            left -= self.cost[k]
            if left < 0:
                break
            n += 1
        return n


def _dedupe_costs(keys: list[str], recs: list[dict]) -> list[dict]:
    """A prompt repeated in the input was paid once: later copies are ledger hits at cost 0."""
    seen, out = set(), []
    for k, r in zip(keys, recs):
        if k in seen and r["status"] == "ok":
            r = {**r, "ledger_hit": True, "cost_usd": 0.0}
        seen.add(k)
        out.append(r)
    return out


def _submit(cfg: TeacherConfig, oa, rd: RunDir, unsent: dict[str, list[dict]], params: dict) -> dict:
    model = _provider_model(cfg.model)
    lines = [json.dumps({"custom_id": k, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": model, "messages": m, "temperature": cfg.temperature, "max_tokens": cfg.max_tokens, "n": cfg.n}})
             for k, m in unsent.items()]
    f = oa.files.create(file=("replay-batch.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch")
    b = oa.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                          metadata={"run_id": rd.run_id, "stage": "replay"})
    return {"batch_id": b.id, "input_file_id": f.id, "keys": list(unsent), "submitted_at": time.time(), "params": params}


def _collect(cfg: TeacherConfig, oa, state: dict, state_path: Path, client: TeacherClient, found: dict, progress) -> None:
    bid, deadline = state["batch_id"], time.monotonic() + cfg.batch_timeout_s
    b = oa.batches.retrieve(bid)
    while b.status not in TERMINAL:
        if time.monotonic() > deadline:
            raise DistillError(f"batch {bid} still {b.status} after {cfg.batch_timeout_s:.0f}s; rerun the replay to resume it "
                               f"(its id is saved in {state_path})")
        rc = b.request_counts
        progress.bar.set_description(f"batch {b.status} {rc.completed if rc else 0}/{rc.total if rc else '?'}", refresh=True)
        time.sleep(cfg.batch_poll_s)
        b = oa.batches.retrieve(bid)
    turnaround_ms = max(0.0, ((b.completed_at or time.time()) - (b.created_at or state["submitted_at"])) * 1000)
    for file_id in (b.output_file_id, b.error_file_id):
        if not file_id:
            continue
        for line in oa.files.content(file_id).text.splitlines():
            if line.strip():
                _take(json.loads(line), client, found, progress, turnaround_ms)
    for k in state["keys"]:  # anything the batch did not answer (failed/expired/cancelled batch)
        if k not in found:
            _fail(k, f"batch_{b.status}: batch {bid} returned no result for this prompt", client, found, progress)
    state_path.rename(state_path.with_name(f"batch-{bid}.done.json"))  # keep it for audit; never resume it again


def _take(row: dict, client: TeacherClient, found: dict, progress, latency_ms: float) -> None:
    key = row.get("custom_id")
    if not key or key in found:
        return
    resp, err = row.get("response") or {}, row.get("error")
    if resp.get("status_code") == 200 and not err:
        rec = record_from_body(key, resp.get("body") or {}, client, latency_ms)
        if rec["status"] == "ok":
            client.ledger.complete(key, {k: v for k, v in rec.items() if k not in ("key", "ledger_hit")}, rec["cost_usd"])
            found[key] = rec
            progress.update(rec)
            return
        _fail(key, rec["error"], client, found, progress)
        return
    body = resp.get("body") or {}
    msg = (err or {}).get("message") or (body.get("error") or {}).get("message") or "no detail"
    _fail(key, f"http_{resp.get('status_code', 'error')}: {msg}", client, found, progress)


def _fail(key: str, reason: str, client: TeacherClient, found: dict, progress) -> None:
    client.ledger.fail(key, reason)
    found[key] = client.failed_record(key, reason, 1, 0.0)
    progress.update(found[key])
