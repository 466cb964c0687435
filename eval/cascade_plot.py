"""cascade.png: agreement with the teacher vs coverage (the share the student answers), on the
holdout, with the operating point chosen on validation (matplotlib Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_cascade(res: dict[str, Any], path: str | Path, target_agreement: float | None = None) -> Path:
    """Plot an eval.cascade.evaluate_cascade result (needs its "curve"); returns the PNG path."""
    from eval.plots import _plt

    plt = _plt()
    pts = res.get("curve") or []
    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if pts:
        cov = [p["coverage"] for p in pts]
        ax.plot(cov, [p["student_agreement"] for p in pts], label="student, on the share it answers", color="tab:orange")
        ax.plot(cov, [p["cascade_agreement"] for p in pts], label="cascade (rest answered by the teacher)", color="tab:blue")
    if res.get("student_alone_agreement") is not None:
        ax.scatter([1.0], [res["student_alone_agreement"]], color="tab:orange", zorder=3, label="student alone")
    if target_agreement is not None:
        ax.axhline(target_agreement, color="grey", linestyle="--", linewidth=1, label=f"target {target_agreement:.1%}")
    if res.get("reachable") and res.get("coverage") is not None:
        lo, hi = res["cascade_agreement_ci"]
        ax.errorbar([res["coverage"]], [res["cascade_agreement"]], yerr=[[res["cascade_agreement"] - lo], [hi - res["cascade_agreement"]]],
                    fmt="o", color="tab:red", capsize=4, zorder=4, label=f"chosen on validation: coverage {res['coverage']:.1%}")
        ax.axvline(res["coverage"], color="tab:red", linestyle=":", linewidth=1)
    elif res.get("reason"):
        ax.set_title("target unreachable", color="tab:red", fontsize=9, loc="right")
    lows = [p["student_agreement"] for p in pts] + [res.get("student_alone_agreement") or 1.0]
    ax.set_ylim(max(0.0, min(lows) - 0.02), 1.005)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("coverage (share of holdout requests the student answers)")
    ax.set_ylabel("agreement with the teacher")
    ax.set_title("Cascade: agreement vs coverage (holdout)", loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
