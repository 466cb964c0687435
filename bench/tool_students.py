"""Bench: tool-calling students on their holdout (issue #12) - the example's stages end to end with
the reference teacher (ingest -> replay -> filter -> train -> evaluate), then its figures.

    python -P bench/tool_students.py --example nlu_tools                    # the whole log (CPU: minutes)
    python -P bench/tool_students.py --example bfcl --max-records 200 --set student.epochs=1

Figures (eval/toolcall_eval.py, BFCL AST semantics against the teacher's calls, 95 % bootstrap
intervals): tool-name accuracy, arguments exact, per-argument accuracy, parallel-set match, called
when text was due and the reverse; the agreement; the kind kind auto picked; the train stage's
wall time, threads and device; the load average at start and end (a shared CPU: say it beside any
timing). Baseline = the teacher (the reference answers: 100 % by construction), so the figures
are the student's distance from it. Ends with ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.cli import main as cli  # noqa: E402
from eval.toolcall_eval import METRICS  # noqa: E402


def run(example: str, data: Path, max_records: int | None, extra: list[str]) -> Path:
    cfg = REPO / "examples" / example / "distill.yaml"
    sets = [f"data_dir={data}", "reference_teacher.latency_ms=5", "teacher.progress=false", "eval.progress=false",
            "eval.latency_requests=20", "eval.warmup_requests=2", "gate.min_agreement=0.0",
            *([f"ingest.max_records={max_records}"] if max_records else []), *extra]
    args = [a for s in sets for a in ("--set", s)]
    for verb in ("ingest", "replay", "filter", "train", "evaluate"):
        t0 = time.time()
        if cli([verb, "--config", str(cfg), *args]) != 0:
            raise SystemExit(f"{verb} failed")
        print(f"# {verb}: {time.time() - t0:.1f} s, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return next((data / "runs").iterdir())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", choices=["nlu_tools", "bfcl"], default="nlu_tools")
    ap.add_argument("--max-records", type=int, default=None, help="ingest.max_records (default: the whole log)")
    ap.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (repeatable)")
    ap.add_argument("--keep", type=Path, default=None, help="data dir to keep (default: a temporary one)")
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        rd = run(a.example, a.keep or Path(tmp) / "data", a.max_records, a.set)
        report = json.loads((rd / "eval" / "report.json").read_text())
        train = json.loads((rd / "train" / "metrics.json").read_text())
    m, ci = report["metrics"], report["intervals"]
    tc = report["details"].get("tool_calls") or {}
    print(f"{a.example}: kind {train['kind']} ({train.get('kind_decision', {}).get('reason')}); "
          f"train {train['train_examples']} examples, {train['wall_s']} s on {train['device']} ({train['threads']} threads)")
    print(f"holdout {report['counts']['evaluated']} ({tc.get('n_call_expected')} with calls, {tc.get('n_parallel')} parallel)")
    for k in ("agreement", *METRICS):
        v = m.get(k)
        print(f"  {k:30s} {'n/a' if v is None else f'{v:.3f}'}" + (f"  [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if k in ci else ""))
    out = {"bench": "tool_students", "example": a.example, "kind": train["kind"], "train_examples": train["train_examples"],
           "holdout": report["counts"]["evaluated"], "train_wall_s": train["wall_s"], "device": train["device"], "threads": train["threads"],
           "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2),
           **{k: m.get(k) for k in ("agreement", *METRICS)}, "intervals": {k: ci[k] for k in ("agreement", *METRICS) if k in ci},
           "latency_p50_ms": m.get("latency_p50_ms"), "baseline": "teacher = reference answers (1.0 by construction)"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
