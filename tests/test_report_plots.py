"""The eval report's pictures (eval/plots.py) and the markdown that shows them on the Prefect run."""
from __future__ import annotations

import base64
import json
import random

from core.rundir import RunDir
from eval.plots import (
    accuracy_with_intervals,
    categorical_fields,
    confused_pairs,
    field_intervals,
    plots_markdown,
    write_plots,
)

PNG = b"\x89PNG\r\n\x1a\n"


def _intent(x: str) -> str:
    return json.dumps({"intent": x})


def _predictions() -> list[dict]:
    """60 items over 3 intents; the student calls 6 card_arrival items card_delivery_estimate
    and 2 balance items 'card_arrival', and misses one answer entirely."""
    rows = [("card_arrival", "card_arrival")] * 14 + [("card_arrival", "card_delivery_estimate")] * 6
    rows += [("balance", "balance")] * 18 + [("balance", "card_arrival")] * 2
    rows += [("card_delivery_estimate", "card_delivery_estimate")] * 19 + [("card_delivery_estimate", None)]
    return [{"id": str(i), "teacher": _intent(t), "student": _intent(s) if s else None} for i, (t, s) in enumerate(rows)]


def _latency(median_ms: float, rng: random.Random) -> dict:
    levels = {}
    for c in (1, 8):
        samples = [rng.lognormvariate(0, 0.3) * median_ms * (1 + c / 8) for _ in range(50)]
        levels[f"c{c}"] = {"concurrency": c, "requests": 50, "latency_ms": {"p50": sorted(samples)[25]}, "latency_samples_ms": samples}
    return {"levels": levels}


def _report() -> dict:
    rng = random.Random(0)
    return {
        "run_id": "t-plots",
        "student": {"kind": "classifier"},
        "metrics": {"teacher_cost_per_1k_usd": 0.69, "cost_per_1k_usd": 0.0011, "cost_per_1k_with_training_usd": 0.0013,
                    "cost_ratio": 0.0016, "latency_p50_ms": 8.0, "teacher_latency_p50_ms": 120.0},
        "details": {"latency": {"student": _latency(8, rng), "teacher": _latency(120, rng)}},
    }


def test_confused_pairs_rank_the_student_disagreements():
    preds = _predictions()
    fields = categorical_fields([p["teacher"] for p in preds], [p["student"] for p in preds], classifier=True)
    assert list(fields) == ["intent"]
    top = confused_pairs(fields["intent"])
    assert top[0] == ("card_arrival", "card_delivery_estimate", 6, 20)
    assert ("balance", "card_arrival", 2, 20) in top and ("card_delivery_estimate", "<no answer>", 1, 20) in top
    assert sum(c for *_, c, _ in top) == 9
    acc = accuracy_with_intervals(fields["intent"])
    a, lo, hi, n = acc["card_arrival"]
    assert (a, n) == (0.7, 20) and lo < 0.7 < hi


def test_categorical_fields_of_structured_outputs_and_bare_labels():
    teacher = [json.dumps({"intent": i % 3, "amount": f"{i}.00", "urgent": i % 2 == 0}) for i in range(40)]
    student = [json.dumps({"intent": i % 3, "amount": f"{i}.00", "urgent": True}) for i in range(40)]
    fields = categorical_fields(teacher, student)
    assert sorted(fields) == ["intent", "urgent"]  # amount: every value distinct, not categorical
    assert confused_pairs(fields["urgent"]) == [("false", "true", 20, 20)]
    fi = field_intervals(teacher, student)
    assert fi["amount"][0] == 1.0 and fi["urgent"][0] == 0.5 and fi["urgent"][3] == 40
    labels = categorical_fields(["yes", "no"] * 10, ["yes"] * 20)
    assert confused_pairs(labels["label"]) == [("no", "yes", 10, 10)]
    assert categorical_fields([f"free text {i}" for i in range(20)], ["x"] * 20) == {}


def test_write_plots_reads_the_run_predictions_and_draws_each_picture(tmp_path):
    from core.base import write_jsonl

    rd = RunDir(tmp_path / "run")
    out_dir = rd.stage_dir("eval")
    write_jsonl(rd.predictions, _predictions())
    written = write_plots(_report(), out_dir)
    assert [p.name for p in written] == ["disagreements.png", "fields.png", "latency.png", "cost.png"]
    for p in written:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5_000


def test_old_reports_without_predictions_or_samples_still_draw_latency_and_cost(tmp_path):
    report = _report()
    report["details"] = {}
    report["metrics"].update(latency_p95_ms=12.0, teacher_latency_p95_ms=200.0)
    assert [p.name for p in write_plots(report, tmp_path)] == ["latency.png", "cost.png"]


def test_plots_markdown_inlines_images_and_links_past_the_budget(tmp_path):
    rd = RunDir(tmp_path / "run")
    report = _report()
    report["plots"] = [str(p.relative_to(rd.path)) for p in write_plots(report, rd.stage_dir("eval"))]
    md = plots_markdown(report, rd.path)
    uris = [line for line in md.splitlines() if line.startswith("![")]
    assert len(uris) == 2 and all("](data:image/png;base64," in u for u in uris)
    assert base64.b64decode(uris[0].split("base64,")[1].rstrip(")"))[:8] == PNG
    assert "Latency distribution" in md and "log scale" in md
    linked = plots_markdown(report, rd.path, max_inline_bytes=10)
    assert "data:image" not in linked and "file://" in linked
    assert "No plots" in plots_markdown({"run_id": "x"}, rd.path)


def test_labels_with_dollar_signs_are_drawn_as_text(tmp_path):
    """Slot values like "$20 to $30" once started matplotlib mathtext and failed every plot."""
    from eval.plots import _plot_accuracy

    written: list = []
    _plot_accuracy({"pay $20 to $30": (0.5, 0.4, 0.6, 10), "x": (1.0, 0.9, 1.0, 5)}, "per-label $ agreement",
                   tmp_path / "fields.png", written)
    assert written == [tmp_path / "fields.png"] and (tmp_path / "fields.png").stat().st_size > 0
