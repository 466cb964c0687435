"""PNG plots for the eval report (matplotlib Agg: no display on servers or in CI)."""
from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """latency.png (p50/p95/p99 teacher vs student), cost.png (per 1k), fields.png (per-field or
    per-label accuracy); each only when its data exists. Returns the written paths."""
    plt = _plt()
    out_dir = Path(out_dir)
    m = report.get("metrics", {})
    written: list[Path] = []

    pcts = ["p50", "p95", "p99"]
    stud = [m.get(f"latency_{p}_ms") for p in pcts]
    teach = [m.get(f"teacher_latency_{p}_ms") for p in pcts]
    if any(v is not None for v in stud + teach):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = range(len(pcts))
        ax.bar([i - 0.2 for i in x], [v or 0 for v in teach], width=0.4, label="teacher")
        ax.bar([i + 0.2 for i in x], [v or 0 for v in stud], width=0.4, label="student")
        ax.set_xticks(list(x), pcts)
        ax.set_ylabel("latency (ms), concurrency 1")
        ax.set_title("Latency: teacher vs student")
        ax.legend()
        fig.tight_layout()
        written.append(out_dir / "latency.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    costs = {"teacher": m.get("teacher_cost_per_1k_usd"), "student": m.get("cost_per_1k_usd"),
             "student + training": m.get("cost_per_1k_with_training_usd")}
    costs = {k: v for k, v in costs.items() if v is not None}
    if costs:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(list(costs), list(costs.values()), color=["tab:blue", "tab:orange", "tab:green"][: len(costs)])
        ax.set_ylabel("USD per 1k requests")
        ax.set_title("Cost per 1k requests")
        fig.tight_layout()
        written.append(out_dir / "cost.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)

    details = report.get("details", {})
    acc = details.get("field_accuracy") or details.get("per_label_accuracy")
    if acc:
        title = "Per-field accuracy" if details.get("field_accuracy") else "Per-label accuracy (30 weakest)"
        items = sorted(acc.items(), key=lambda kv: kv[1])[:30]
        fig, ax = plt.subplots(figsize=(6, max(2.5, 0.25 * len(items) + 1)))
        ax.barh([str(k)[:40] for k, _ in items], [v for _, v in items])
        ax.set_xlim(0, 1)
        ax.set_xlabel("student = teacher")
        ax.set_title(title)
        fig.tight_layout()
        written.append(out_dir / "fields.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written
