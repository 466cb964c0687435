"""Pairwise LLM judge: teacher answer vs student answer, asked in both orders.

LLM judges prefer whichever answer they see first (or second); asking both orders and only
counting a win when both orders agree cancels that bias — a split verdict is a tie. Outputs that
match exactly are ties without a judge call. Score = (wins + ties/2) / judged; 0.5 = parity.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from core.llm import Endpoint, complete, run_sync
from eval.bootstrap import bootstrap_mean
from eval.config import EvalConfig, JudgeConfig
from eval.metrics import outputs_match
from eval.progress import bar

SYSTEM = ("You are comparing two candidate answers to the same conversation. Judge which answer better "
          "fulfils the last request (correctness first, then format and completeness). "
          "Reply with exactly one word: A, B, or TIE.")


def judge_prompt(messages: list[dict], a: str, b: str) -> list[dict]:
    convo = "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in messages)
    user = f"Conversation:\n{convo}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}\n\nWhich answer is better? Reply A, B, or TIE."
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str | None) -> str | None:
    """'A', 'B', 'TIE' from the judge's reply (first such word), else None."""
    if not text:
        return None
    m = re.search(r"\b(TIE|A|B)\b", text.strip().upper())
    return m.group(1) if m else None


def combine(first: str | None, second: str | None) -> float | None:
    """Student score from both orders. first: teacher=A, student=B; second: student=A, teacher=B.
    1 = student wins both, 0 = teacher wins both, 0.5 otherwise; None if a verdict is unreadable."""
    if first is None or second is None:
        return None
    s1 = {"B": 1.0, "A": 0.0, "TIE": 0.5}[first]
    s2 = {"A": 1.0, "B": 0.0, "TIE": 0.5}[second]
    if s1 == s2 and s1 != 0.5:
        return s1
    return 0.5


async def judge_items(jc: JudgeConfig, conversations: list[list[dict]], teacher: list[str], student: list[str | None],
                      tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Judge the first jc.max_items items in both orders; tick() after each item (progress)."""
    ep = Endpoint(jc.model, jc.api_base, jc.api_key.get_secret_value() if jc.api_key else None, 0.0, 8, jc.timeout_s)
    sem = asyncio.Semaphore(jc.concurrency)

    async def ask(msgs):
        async with sem:
            r = await complete(ep, msgs)
            return parse_verdict(r.text), r.error

    async def judged(m, t, s):
        if s is not None and outputs_match(s, t):
            return 0.5, "identical", None
        if s is None:
            return 0.0, "no student answer", None
        (v1, e1), (v2, e2) = await asyncio.gather(ask(judge_prompt(m, t, s)), ask(judge_prompt(m, s, t)))
        score = combine(v1, v2)
        return score, f"{v1}/{v2}", e1 or e2

    async def one(m, t, s):
        r = await judged(m, t, s)
        if tick is not None:
            tick()
        return r

    n = min(jc.max_items, len(conversations))
    res = await asyncio.gather(*(one(conversations[i], teacher[i], student[i]) for i in range(n)))
    scores = [r[0] for r in res if r[0] is not None]
    errors = [r[2] for r in res if r[0] is None]
    return {
        "judged": len(scores), "unreadable": len(res) - len(scores), "first_error": next((e for e in errors if e), None),
        "wins": sum(1 for s in scores if s == 1.0), "ties": sum(1 for s in scores if s == 0.5),
        "losses": sum(1 for s in scores if s == 0.0),
        "identical": sum(1 for r in res if r[1] == "identical"),
        "scores": scores,
    }


def judge_report(cfg: EvalConfig, report: dict, conversations, teacher, student) -> dict:
    """Run the judge and put judge_score (+interval) and win/tie/loss rates into the report."""
    n_items = min(cfg.judge.max_items, len(conversations))
    with bar(n_items, "eval: pairwise judge", cfg.progress, unit="item") as pb:
        r = run_sync(judge_items(cfg.judge, conversations, teacher, student, tick=lambda: pb.update(1)))
    b = bootstrap_mean(np.array(r.pop("scores")), samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed)
    n = r["judged"]
    m = report["metrics"]
    m["judge_score"] = b["value"]
    if b["ci"]:
        report["intervals"]["judge_score"] = b["ci"]
    for k in ("wins", "ties", "losses"):
        m[f"judge_{k[:-1] if k != 'losses' else 'loss'}_rate"] = (r[k] / n) if n else None
    report["judge"] = {**r, "model": cfg.judge.model, "score": b["value"], "ci": b["ci"],
                       "meaning": "0.5 = parity with the teacher; >0.5 the judge prefers the student in both orders"}
    return report
