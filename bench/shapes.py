"""Bench: students shaped like the answer - the encoder student (label sets + spans) vs the causal
LM, trained and scored on the same NLU++ split in one run (CPU).

    python bench/shapes.py --run /tmp/nlupp/runs/<run>        # a run dir after the filter stage
    python bench/shapes.py --run ... --kinds classifier --set student.epochs=6
    python bench/shapes.py --run ... --lm-max-train-s 600 --lm-eval 80

The run's filter/kept.jsonl is the data (split train / holdout, as the pipeline made it); each kind
trains with the config's student section (kind forced; `--set student.KEY=VALUE` overrides) into
a scratch run dir, then predicts the holdout. The causal LM generates ~1-2 s per answer on CPU, so
--lm-eval scores it on a stable prefix of the holdout; the encoder is scored on the whole holdout
and on that same prefix, so the comparison is like for like. Figures: exact JSON (parsed objects
equal), per structured field micro/macro F1 and exact match (eval/metrics.py), train and predict
seconds, load average. Baseline = the causal LM (what main trained for this data). Ends with ONE
JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.base import read_jsonl, write_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402
from eval.metrics import exact_match, structured_metrics  # noqa: E402


def score(student: list[str | None], teacher: list[str]) -> dict:
    out = {"n": len(teacher), "exact_json": round(float(exact_match(student, teacher).mean()), 4)}
    for f, m in structured_metrics(student, teacher).items():
        out[f] = {k: (round(m[k], 4) if m[k] is not None else None) for k in ("micro_f1", "macro_f1", "exact")}
    return out


def train_and_predict(kind: str, section: dict, kept: list[dict], hold: list[dict], n_lm: int | None, workdir: Path) -> dict:
    from student import load_student
    from student.config import student_config
    from student.train import run_train

    rd = RunDir.create(workdir / kind, "bench")
    write_jsonl(rd.filter_kept, kept)
    sec = {k: v for k, v in section.items() if k not in ("classifier", "causal_lm", "kind")}
    sec.update(section.get(kind) or {})
    cfg = student_config({**sec, "kind": kind})
    load0 = os.getloadavg()[0]
    t0 = time.time()
    m = run_train(cfg, rd)
    train_s = time.time() - t0
    st = load_student(rd.model_dir)
    items = hold[:n_lm] if (kind == "causal_lm" and n_lm) else hold
    t0 = time.time()
    preds = st.predict([r["messages"] for r in items])
    predict_s = time.time() - t0
    res = {"kind": kind, "train_s": round(train_s, 1), "predict_s": round(predict_s, 1), "per_answer_ms": round(1000 * predict_s / max(1, len(items)), 1),
           "load_avg_1m_at_start": round(load0, 2), "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "threads": m.get("threads"),
           "steps": m.get("steps"), "val_accuracy": m.get("val_accuracy"), "holdout": score(preds, [r["response"] for r in items])}
    if n_lm and kind != "causal_lm":
        res["holdout_lm_subset"] = score(preds[:n_lm], [r["response"] for r in hold[:n_lm]])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a run dir whose filter stage is done")
    ap.add_argument("--config", default=str(REPO / "examples/nluplusplus/distill.yaml"), help="root config whose student section is used")
    ap.add_argument("--kinds", default="classifier,causal_lm", help="comma-separated kinds to train (first = candidate, causal_lm = baseline)")
    ap.add_argument("--set", action="append", default=[], metavar="student.KEY=VALUE", help="override a student option (repeatable; dotted for subsections)")
    ap.add_argument("--lm-eval", type=int, default=60, help="holdout items the causal LM predicts (0 = all)")
    ap.add_argument("--lm-max-train-s", type=float, default=None, help="wall-clock cap on causal-LM training")
    args = ap.parse_args()

    from distill.config import load_config

    cfg = load_config(args.config, [s if s.startswith("student.") else f"student.{s}" for s in args.set])
    section = cfg.student.model_dump(mode="json", exclude_unset=False)
    if args.lm_max_train_s:
        section["max_train_s"] = args.lm_max_train_s if "causal_lm" in args.kinds else section.get("max_train_s")
    kept = list(read_jsonl(RunDir(args.run).filter_kept))
    hold = [r for r in kept if r.get("split") == "holdout"]
    print(f"data: {sum(r.get('split', 'train') == 'train' for r in kept)} train, {len(hold)} holdout; cores {os.cpu_count()}, load {os.getloadavg()}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-shapes-") as tmp:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            r = train_and_predict(kind, section, kept, hold, args.lm_eval or None, Path(tmp))
            results[kind] = r
            h = r["holdout"]
            print(f"{kind:>10}: exact JSON {h['exact_json']:.3f} on {h['n']}, " + ", ".join(f"{f} micro-F1 {v['micro_f1']}" for f, v in h.items() if isinstance(v, dict))
                  + f"; train {r['train_s']} s, predict {r['per_answer_ms']} ms/answer, load {r['load_avg_1m_at_start']}->{r['load_avg_1m_at_end']}")
            if "holdout_lm_subset" in r:
                print(f"{'':>10}  on the causal LM's {r['holdout_lm_subset']['n']} items: exact JSON {r['holdout_lm_subset']['exact_json']:.3f}")
            shutil.rmtree(Path(tmp) / kind, ignore_errors=True)
    print(json.dumps({"bench": "shapes", "results": results}))


if __name__ == "__main__":
    main()
