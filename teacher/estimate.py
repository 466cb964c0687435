"""Cost before spending: the expected price of replaying a run's prompts, from token counts and
the teacher's price (core.llm.Pricer, the one the replay bills with).

    estimate_replay(cfg: TeacherConfig, rd: RunDir) -> dict

Prompt tokens are counted on what the teacher will see (teacher_messages: the teacher-only
system prompt included); answer tokens are the logged answer's, cut at `max_tokens`, times `n`
(prompts logged without an answer count as the mean of those with one, or `max_tokens`).
Counts are the project's text approximation (teacher/textutil.py; a provider's BPE counts are
within ~30 % of it on English). Answers already in the replay ledger cost nothing: the figure is
what a replay that pays for every prompt costs, an upper bound for a rerun.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import orjson

from core.base import DistillError
from core.llm import Pricer
from core.rundir import RunDir
from teacher.config import TeacherConfig
from teacher.from_config import teacher_messages
from teacher.textutil import approx_tokens, messages_tokens


def prompt_files(rd: RunDir) -> list[Path]:
    """What replay reads: the selected train prompts when the select stage ran, and the holdout."""
    train = rd.select_train if rd.select_train.is_file() else rd.ingest_train
    if not train.is_file():
        raise DistillError(f"estimate needs {train} (run the ingest stage first)")
    return [p for p in (train, rd.ingest_holdout) if p.is_file()]


def _rows(paths: list[Path]) -> Iterator[dict]:
    for p in paths:
        with open(p, "rb") as f:
            for line in f:
                if line.strip():
                    yield orjson.loads(line)


def row_tokens(row: dict, cfg: TeacherConfig) -> tuple[int, int | None]:
    """(prompt tokens the teacher will see, the logged answer's tokens cut at max_tokens, or None)."""
    pt = messages_tokens(teacher_messages(row["messages"], cfg))
    answer = row.get("response")
    return pt, min(approx_tokens(answer), cfg.max_tokens) if isinstance(answer, str) else None


def expected_costs(cfg: TeacherConfig, rows: list[dict], pricer: Pricer) -> list[float] | None:
    """Each prompt's expected price, the estimate's way (answers logged without one count as
    the mean of those with one, or max_tokens); None when the model is unpriced."""
    toks = [row_tokens(r, cfg) for r in rows]
    logged = [a for _, a in toks if a is not None]
    mean = sum(logged) / len(logged) if logged else float(cfg.max_tokens)
    out = []
    for pt, a in toks:
        c = pricer.cost(pt, (mean if a is None else a) * cfg.n)
        if c is None:
            return None
        out.append(c)
    return out


def estimate_replay(cfg: TeacherConfig, rd: RunDir) -> dict:
    prompts = prompt_tokens = answered = answer_tokens = 0
    for row in _rows(prompt_files(rd)):  # streamed: any size
        prompts += 1
        pt, a = row_tokens(row, cfg)
        prompt_tokens += pt
        if a is not None:
            answered += 1
            answer_tokens += a
    per_answer = answer_tokens / answered if answered else float(cfg.max_tokens)
    completion_tokens = (answer_tokens + (prompts - answered) * per_answer) * cfg.n
    pricer = Pricer(cfg.model, cfg.input_cost_per_token, cfg.output_cost_per_token,
                    batch=cfg.mode == "batch", batch_discount=cfg.batch_discount)
    cost = pricer.cost(prompt_tokens, completion_tokens)
    out = {"prompts": prompts, "prompt_tokens": prompt_tokens, "completion_tokens": round(completion_tokens),
           "answers_logged": answered, "model": cfg.model, "mode": cfg.mode, "priced": pricer.priced,
           "price_source": pricer.source, "expected_cost_usd": None if cost is None else round(cost, 6),
           "max_budget_usd": cfg.max_budget_usd}
    if cost is not None and cfg.max_budget_usd is not None and cost > cfg.max_budget_usd:
        out["prompts_within_budget"] = int(prompts * cfg.max_budget_usd / cost)
    return out


def estimate_markdown(e: dict) -> str:
    if not e["priced"]:
        cost = f"unknown: {e['model']!r} has no price (set teacher.input_cost_per_token / output_cost_per_token)"
    else:
        cost = f"${e['expected_cost_usd']:,.4f}"
    lines = [f"Replay estimate: {e['prompts']:,} prompts to {e['model']} ({e['mode']}), ~{e['prompt_tokens']:,} prompt + "
             f"~{e['completion_tokens']:,} answer tokens: expected cost {cost}"]
    if e.get("max_budget_usd") is not None:
        within = e.get("prompts_within_budget")
        lines.append(f"teacher.max_budget_usd ${e['max_budget_usd']:g}: " + (
            f"the replay will stop after about {within:,} prompts" if within is not None else "enough for all of them"))
    return "\n".join(lines)


__all__ = ["estimate_replay", "estimate_markdown", "prompt_files", "expected_costs", "row_tokens"]
