"""Cost per 1k requests for teacher and student, training cost, amortisation and break-even.

Teacher: what the replay actually paid per request (litellm price map or the teacher's custom
per-token prices via core.llm's one price function, already in each replay record's cost_usd), so the figure reflects the logged
prompt mix rather than the few timing prompts. Student: hardware $/hour spread over the measured
throughput, i.e. the price of a fully-utilised replica (an idle replica costs more per request;
the report says so).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.llm import token_cost


def teacher_cost_per_1k(replay: Sequence[dict], model: str, input_cost: float | None, output_cost: float | None) -> dict[str, Any]:
    """Mean replay cost per successful request x 1000; recomputed from mean tokens if the replay
    recorded no cost (e.g. prices configured after the replay ran)."""
    ok = [r for r in replay if r.get("status") == "ok"]
    if not ok:
        return {"usd": None, "source": "no successful replay records", "requests": 0}
    mean_cost = sum(float(r.get("cost_usd") or 0.0) for r in ok) / len(ok)
    if mean_cost > 0:
        return {"usd": mean_cost * 1000, "source": "replay cost_usd", "requests": len(ok)}
    pt = sum(int(r.get("prompt_tokens") or 0) for r in ok) / len(ok)
    ct = sum(int(r.get("completion_tokens") or 0) for r in ok) / len(ok)
    per = token_cost(model, pt, ct, input_cost, output_cost)
    if per is None:
        return {"usd": None, "source": f"model {model!r} is not in litellm's price map and no teacher.input_cost_per_token/output_cost_per_token is set", "requests": len(ok)}
    return {"usd": per * 1000, "source": "replay tokens x prices", "requests": len(ok)}


def student_cost_per_1k(usd_per_hour: float, throughput_rps: float | None) -> float | None:
    """$/hour over requests/hour at the measured throughput, per 1k requests."""
    if not throughput_rps or throughput_rps <= 0:
        return None
    return usd_per_hour / (throughput_rps * 3600) * 1000


def training_cost(train_wall_s: float | None, usd_per_hour: float) -> float | None:
    if train_wall_s is None:
        return None
    return train_wall_s / 3600 * usd_per_hour


def break_even(teacher_per_1k: float | None, student_per_1k: float | None, train_usd: float | None, monthly_requests: int) -> dict[str, Any]:
    """Requests after which the student (training + serving) is cheaper than the teacher, the
    training cost amortised over one month of the configured volume, and months to pay back."""
    out: dict[str, Any] = {"monthly_requests": monthly_requests, "break_even_requests": None, "payback_months": None,
                           "training_per_1k_amortised": None, "student_per_1k_with_training": None, "monthly_saving_usd": None}
    if train_usd is not None:
        out["training_per_1k_amortised"] = train_usd / monthly_requests * 1000
        if student_per_1k is not None:
            out["student_per_1k_with_training"] = student_per_1k + out["training_per_1k_amortised"]
    if teacher_per_1k is None or student_per_1k is None:
        out["verdict"] = "unknown: teacher or student cost missing"
        return out
    saving_per_req = (teacher_per_1k - student_per_1k) / 1000
    out["monthly_saving_usd"] = saving_per_req * monthly_requests
    if saving_per_req <= 0:
        out["verdict"] = "never: the student costs at least as much per request as the teacher"
        return out
    t = train_usd or 0.0
    out["break_even_requests"] = t / saving_per_req
    out["payback_months"] = out["break_even_requests"] / monthly_requests
    out["verdict"] = f"pays back after {out['break_even_requests']:,.0f} requests ({out['payback_months']:.2g} months at {monthly_requests:,}/month)"
    return out
