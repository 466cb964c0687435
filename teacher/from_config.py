"""From a TeacherConfig to what the teacher is sent and the client that sends it.

Shared by the online replay (teacher/replay.py), the Batch API replay (teacher/batch.py) and the
filter stage's LLM judge (teacher/filters/judge.py), so none of them imports another.
"""
from __future__ import annotations

from pathlib import Path

from core import llm
from teacher.client import RetryBudget, TeacherClient
from teacher.config import TeacherConfig
from teacher.ledger import Ledger
from teacher.limiter import Limiter


def teacher_messages(messages: list[dict], cfg: TeacherConfig) -> list[dict]:
    """What the teacher sees: the prompt plus the teacher-only system prompt (the student never sees it)."""
    if not cfg.system_prompt:
        return messages
    sys_turn = {"role": "system", "content": cfg.system_prompt}
    if cfg.system_prompt_mode == "replace":
        return [sys_turn] + [m for m in messages if m.get("role") != "system"]
    return [sys_turn] + list(messages)


def ledger_endpoint(cfg: TeacherConfig) -> str | None:
    """The endpoint identity in ledger keys: `endpoint_id` when set (an endpoint whose URL changes
    between runs for the same answers, like the reference teacher's free port), else api_base."""
    return cfg.endpoint_id or cfg.api_base


def ledger_lease_s(cfg: TeacherConfig) -> float:
    """How long a claim on another host is trusted: longer than one prompt's worst case with retries."""
    online = (cfg.timeout_s + cfg.backoff_max_s) * (cfg.max_retries + 1) * 2
    return max(300.0, online, cfg.batch_timeout_s if cfg.mode == "batch" else 0.0)


def open_ledger(cfg: TeacherConfig, ledger_path: str | Path | None) -> Ledger:
    """The shared ledger when teacher.ledger_url is set, else the run's SQLite file."""
    return Ledger(cfg.ledger_url or ledger_path, lease_s=ledger_lease_s(cfg))


def pricer(cfg: TeacherConfig, *, batch: bool = False) -> llm.Pricer:
    return llm.Pricer(cfg.model, cfg.input_cost_per_token, cfg.output_cost_per_token, batch=batch, batch_discount=cfg.batch_discount)


def build_client(cfg: TeacherConfig, ledger: Ledger | None, n_prompts: int, *, batch: bool = False) -> TeacherClient:
    """A TeacherClient with the config's limits, retries, retry budget (per prompt) and prices."""
    return TeacherClient(
        key_api_base=ledger_endpoint(cfg),
        model=cfg.model, api_base=cfg.api_base, api_key=cfg.api_key.get_secret_value() if cfg.api_key else None,
        timeout_s=cfg.timeout_s, ledger=ledger, limiter=Limiter(cfg.rpm, cfg.tpm, cfg.limiter_burst_s),
        max_retries=cfg.max_retries, backoff_base_s=cfg.backoff_base_s, backoff_max_s=cfg.backoff_max_s,
        retry_budget=RetryBudget(int(cfg.retry_budget * n_prompts) + 10), conn_error_limit=max(16, 2 * cfg.concurrency),
        pricer=pricer(cfg, batch=batch))
