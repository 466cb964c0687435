"""The prompted baseline: the student's *base* model, prompted few-shot with k teacher examples.

Fine-tuning is only worth it if it beats this. The fine-tuned student and the baseline are
scored on the same holdout items, and the difference gets a paired bootstrap interval: the
student "beat" the baseline only when that interval's lower bound is above zero.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from core.base import read_jsonl
from core.rundir import RunDir
from eval.bootstrap import bootstrap_mean, bootstrap_paired_diff
from eval.config import EvalConfig
from eval.metrics import exact_match
from eval.progress import bar

Predict = Callable[[list[dict]], str]


def no_baseline() -> dict[str, Any]:
    return {"ran": False, "agreement": None, "ci": None, "k": None, "n": 0,
            "verdict": "No prompted baseline was run, so this report cannot say whether fine-tuning beat simply prompting the base model."}


def select_examples(train: list[dict], k: int, seed: int = 0) -> list[dict]:
    """k teacher examples from the kept train records (seeded, so reruns use the same shots)."""
    pool = [r for r in train if r.get("response") is not None]
    return random.Random(seed).sample(pool, min(k, len(pool)))


def few_shot_messages(examples: list[dict], messages: list[dict]) -> list[dict]:
    """The target conversation with each example's turns + teacher answer prepended as
    user/assistant turns. The target's system message (if any) stays first."""
    system = [m for m in messages if m.get("role") == "system"][:1]
    shots: list[dict] = []
    for ex in examples:
        shots += [m for m in ex["messages"] if m.get("role") != "system"]
        shots.append({"role": "assistant", "content": ex["response"]})
    return system + shots + [m for m in messages if m.get("role") != "system"]


def verdict(diff: float | None, ci: list[float] | None, confidence: float, n: int | None = None,
            name: str = "the prompted baseline", enough: str = "Prompting the base model may be enough") -> str:
    """Plain-language comparison; "beat" only when the paired interval excludes zero."""
    if diff is None or ci is None:
        return f"{name[0].upper() + name[1:]} could not be compared."
    ci_txt = f"{confidence:.0%} CI {ci[0] * 100:+.1f} to {ci[1] * 100:+.1f}"
    if ci[0] > 0:
        return f"The fine-tuned student beat {name} by {diff * 100:.1f} points ({ci_txt})."
    if diff > 0:
        items = f" on {n} items" if n else ""
        return (f"The fine-tuned student did NOT beat {name}: it is {diff * 100:.1f} points ahead{items}, "
                f"but the {ci_txt} includes no improvement. Score more items before paying for fine-tuning.")
    return (f"The fine-tuned student did NOT beat {name} ({diff * 100:+.1f} points, {ci_txt}). "
            f"{enough}; fine-tuning is not justified by agreement alone.")


def score_baseline(
    predict: Predict,
    conversations: list[list[dict]],
    teacher: list[str],
    student_hits: list[float],
    *,
    examples: list[dict] | None,
    k: int,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: bool = True,
    desc: str = "eval: baseline",
) -> dict[str, Any]:
    """Agreement of predict() with the teacher, and its paired difference with the student's hits
    on the same items. examples=None means predict() already adds its own k shots."""
    prompts = [few_shot_messages(examples, m) if examples else m for m in conversations]
    preds: list[str | None] = []
    errors = 0
    batch_fn = getattr(predict, "predict_batch", None)  # batched generation is far faster on CPU
    step = getattr(predict, "batch_size", 8) if batch_fn else 1
    with bar(len(prompts), desc, progress, unit="item") as pb:
        for i in range(0, len(prompts), step):
            chunk = prompts[i:i + step]
            try:
                preds += list(batch_fn(chunk)) if batch_fn else [predict(chunk[0])]
            except Exception:  # noqa: BLE001 - a failed generation counts as disagreement, not a crash
                preds += [None] * len(chunk)
                errors += len(chunk)
            pb.update(len(chunk))
    hits = exact_match(preds, teacher)
    agree = bootstrap_mean(hits, samples=samples, confidence=confidence, seed=seed)
    diff = bootstrap_paired_diff(student_hits, hits, samples=samples, confidence=confidence, seed=seed)
    return {"ran": True, "agreement": agree["value"], "ci": agree["ci"], "k": k, "n": len(preds), "errors": errors,
            "student_agreement_same_items": float(sum(student_hits) / len(student_hits)) if student_hits else None,
            "diff": diff["value"], "diff_ci": diff["ci"], "verdict": verdict(diff["value"], diff["ci"], confidence, len(preds)),
            "predictions": preds}


def attach_baseline(cfg: EvalConfig, rd: RunDir, report: dict, predict: Predict, few_shot: bool | None = None) -> dict:
    """Score the baseline on the first cfg.baseline_max_items holdout items and put it in the report
    (slot "prompted_baseline" plus gate metrics prompted_baseline_agreement and
    agreement_vs_prompted_baseline_diff).

    few_shot: prepend cfg.baseline_k teacher examples here. None = auto: not when the callable
    already carries its shots (student.lm_baseline.prompted_baseline_predictor sets `.shots`)."""
    preds = list(read_jsonl(rd.predictions))[: cfg.baseline_max_items]
    hits_all = report["details"]["agreement_hits"]
    examples = None
    own_shots = getattr(predict, "shots", None)
    if few_shot is None:
        few_shot = own_shots is None
    k = cfg.baseline_k if few_shot or own_shots is None else len(own_shots)
    if few_shot:
        kept = rd.filter_kept
        train = [r for r in read_jsonl(kept) if r.get("split") == "train" and r.get("status", "ok") == "ok"]
        examples = select_examples(train, cfg.baseline_k, cfg.seed)
    res = score_baseline(predict, [p["messages"] for p in preds], [p["teacher"] for p in preds], hits_all[: len(preds)],
                         examples=examples, k=k, samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed,
                         progress=cfg.progress, desc="eval: prompted baseline")
    res.pop("predictions")
    res["method"] = getattr(predict, "description", None) or f"base model prompted, {k}-shot"
    return record_baseline(report, "prompted", res)


def record_baseline(report: dict, kind: str, res: dict) -> dict:
    """Put a scored baseline in the report: slot "<kind>_baseline" and the gate metrics
    <kind>_baseline_agreement and agreement_vs_<kind>_baseline_diff, with their intervals."""
    report[f"{kind}_baseline"] = res
    for key, value, ci in ((f"{kind}_baseline_agreement", res["agreement"], res["ci"]),
                           (f"agreement_vs_{kind}_baseline_diff", res["diff"], res["diff_ci"])):
        report["metrics"][key] = value
        if ci is not None:
            report["intervals"][key] = ci
        report.get("missing", {}).pop(key, None)
    return report


def add_prompted_baseline(cfg: EvalConfig, rd: RunDir, predict: Predict, few_shot: bool | None = None) -> dict:
    """Attach a baseline to an existing <run>/eval/report.json (rerunnable after run_eval) and rewrite the report files."""
    import json

    from eval.report import write_report

    report = json.loads((rd.eval_report).read_text())
    attach_baseline(cfg, rd, report, predict, few_shot)
    write_report(cfg, rd, report)
    return report


def base_model_predictor(cfg: EvalConfig, rd: RunDir, base_model: str | None = None) -> Predict:
    """The causal-LM prompted baseline over this run's kept train examples (loads the base model:
    ~20 s, and generation is slow on CPU; keep cfg.baseline_max_items small)."""
    from student.lm_baseline import prompted_baseline_predictor

    from student.toolcall_format import answer_rows

    train = answer_rows(r for r in read_jsonl(rd.filter_kept) if r.get("split") == "train")  # tool calls: canonical answer text
    return prompted_baseline_predictor(base_model, train, cfg.baseline_k)


def choose_baseline(cfg: EvalConfig, rd: RunDir, student_kind: str | None, base_model: str | None) -> Predict | None:
    """The baseline for this run's student: its own base model, without fine-tuning."""
    mode = cfg.baseline
    if mode == "off":
        return None
    if mode == "auto":
        mode = "encoder" if student_kind == "classifier" else "causal_lm"
    own = (mode == "encoder") == (student_kind == "classifier")  # the configured base_model is for this kind
    if mode == "encoder":
        from eval.encoder_baseline import encoder_baseline_predictor

        return encoder_baseline_predictor(rd, base_model if own else None, cfg.baseline_k, cfg.seed)
    return base_model_predictor(cfg, rd, base_model if own else None)
