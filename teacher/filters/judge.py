"""LLM judge: a model (the teacher by default) scores each surviving output 1-10 against a rubric.

Paid calls, so they go through the same ledger and client as the replay (teacher/client.py, which
calls models through core/llm.py): a rerun of the filter stage, or a restart after a crash, pays
nothing for outputs already judged.
Off by default; it runs last so it only judges what every cheap filter let through.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from core.base import DistillError
from teacher.filter_config import JudgeFilterConfig
from core.toolcalls import calls_text, tool_names
from teacher.filters.base import Filter, Verdict, drop, response_text

JUDGE_SYSTEM = (
    "You are a strict grader of AI assistant answers. Score how well the ANSWER meets the RUBRIC for the "
    "CONVERSATION, from 1 (useless or wrong) to 10 (perfect). Reply with only a JSON object: "
    '{"score": <integer 1-10>, "reason": "<one short sentence>"}'
)
_SCORE = re.compile(r'"?score"?\s*[:=]\s*"?(\d+(?:\.\d+)?)', re.I)


def _turn(m: dict) -> str:
    text = m.get("content") or ""
    if m.get("tool_calls"):
        text = f"{text} [calls] {calls_text(m['tool_calls'])}".strip()
    return f"[{m.get('role')}] {text}"


def judge_messages(record: dict, rubric: str) -> list[dict]:
    convo = "\n".join(_turn(m) for m in record.get("messages") or [] if isinstance(m, dict))
    answer = response_text(record)
    if record.get("tool_calls"):
        tools = ", ".join(tool_names(record.get("tools"))) or "none"
        answer = f"{answer}\n[calls] {calls_text(record['tool_calls'])}\n(declared tools: {tools})".strip()
    user = f"RUBRIC:\n{rubric}\n\nCONVERSATION:\n{convo}\n\nANSWER:\n{answer}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_score(text: str | None) -> tuple[float | None, str]:
    """(score, reason) from the judge's answer; JSON first, then a "score: N" anywhere."""
    if not text:
        return None, ""
    s = text.strip()
    m = re.search(r"\{.*\}", s, re.S)
    if m:
        try:
            obj = json.loads(m.group(0))
            if isinstance(obj, dict) and isinstance(obj.get("score"), (int, float, str)):
                score = float(obj["score"])
                return (score if 1 <= score <= 10 else None), str(obj.get("reason", ""))
        except (json.JSONDecodeError, ValueError):
            pass
    m = _SCORE.search(s)
    if m:
        score = float(m.group(1))
        return (score if 1 <= score <= 10 else None), s[:200]
    return None, s[:200]


class JudgeFilter(Filter):
    name = "judge"

    def __init__(self, config: JudgeFilterConfig, teacher: Any = None, ledger_path: str | Path | None = None):
        super().__init__(config)
        if teacher is None:
            from teacher.config import TeacherConfig

            teacher = TeacherConfig()
        self.teacher = teacher
        self.ledger_target = teacher.ledger_url or (str(ledger_path) if ledger_path else None)
        if config.enabled and self.ledger_target is None:
            raise DistillError("filter.judge.enabled needs the replay ledger: pass ledger_path to run_filters (or set teacher.ledger_url)")
        self.calls = {"judged": 0, "ledger_hits": 0, "failed": 0, "cost_usd": 0.0}

    def _judge_teacher_config(self) -> Any:
        """The teacher's settings (limits, retries, key) with the judge's model and endpoint."""
        cfg, t = self.config, self.teacher
        model = cfg.model or t.model
        same = model == t.model
        upd = {"model": model, "api_base": cfg.api_base if cfg.api_base is not None else (t.api_base if same else None)}
        if not same:  # the teacher's custom prices and key are not the judge's
            upd.update(input_cost_per_token=None, output_cost_per_token=None, api_key=None)
        return t.model_copy(update=upd)

    def check_all(self, records: list[dict]) -> list[Verdict]:
        from teacher.client import complete_many
        from teacher.from_config import build_client, ledger_lease_s
        from teacher.ledger import Ledger

        tcfg = self._judge_teacher_config()
        ledger = Ledger(self.ledger_target, lease_s=ledger_lease_s(tcfg))
        try:
            client = build_client(tcfg, ledger, len(records))
            results = complete_many(client, [judge_messages(r, self.config.rubric) for r in records],
                                    concurrency=self.config.concurrency, temperature=0.0, max_tokens=self.config.max_tokens)
        finally:
            ledger.close()
        verdicts = []
        for res in results:
            c = self.calls
            c["judged"] += 1
            c["ledger_hits"] += bool(res.get("ledger_hit"))
            c["cost_usd"] += res.get("cost_usd") or 0.0
            if res.get("status") != "ok":
                c["failed"] += 1
                verdicts.append(self._on_error(f"judge call failed: {res.get('error')}"))
                continue
            score, why = parse_score(res.get("response"))
            if score is None:
                c["failed"] += 1
                verdicts.append(self._on_error(f"no score in judge answer {str(res.get('response'))[:80]!r}"))
            elif score >= self.config.threshold:
                verdicts.append(Verdict(True, update={"judge_score": score}))
            else:
                verdicts.append(drop("judge_low_score", f"{score:g} < {self.config.threshold:g}: {why[:160]}"))
        self.calls["cost_usd"] = round(self.calls["cost_usd"], 6)
        self.note = f"judge {tcfg.model}: " + ", ".join(f"{k} {v}" for k, v in self.calls.items())
        return verdicts

    def _on_error(self, msg: str) -> Verdict:
        if self.config.on_error == "keep":
            return Verdict(True, update={"judge_score": None})
        return drop("judge_failed", msg)
