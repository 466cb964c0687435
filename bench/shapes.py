"""Bench: students shaped like the answer - the encoder student (label sets + BIO-tagged spans) vs
the causal LM decoding freely and under the answers' JSON schema, on the same NLU++ split, one run (CPU).

    python -P bench/shapes.py --run <data_dir>/runs/<run>        # a run dir after the filter stage
    python -P bench/shapes.py --run ... --kinds classifier --set student.epochs=6
    python -P bench/shapes.py --run ... --lm-train 192 --lm-epochs 1 --lm-eval 40

The run's filter/kept.jsonl is the data (split train / holdout, as the pipeline made it). Each kind
trains with the config's student section (kind forced; `--set student.KEY=VALUE` overrides) into a
scratch run dir. The encoder trains on the whole training split and predicts the whole holdout.
The causal LM is kept SMALL so the bench finishes on 2 loaded cores: it trains on the first
--lm-train training records for --lm-epochs epochs (SmolLM2-135M + LoRA, ~1-2 s per generated
answer on CPU) and predicts the first --lm-eval holdout items twice - free decoding, then under the
schema (student/constrained.py, llguidance) - and the encoder is scored on that same prefix too,
so every row of the comparison is like for like. A small causal LM is a floor for that kind, not
its best: the figures say so. Figures: exact JSON (parsed objects equal), schema-valid share, per
structured field micro/macro F1 and exact match (eval/metrics.py), train and predict seconds, load
average. Baseline = the causal LM, free decoding. Ends with ONE JSON line.
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


def schema_valid(preds: list[str | None], schema: dict | None) -> float | None:
    if schema is None:
        return None
    from jsonschema import Draft202012Validator

    val = Draft202012Validator(schema)

    def ok(p: str | None) -> bool:
        try:
            return p is not None and not any(True for _ in val.iter_errors(json.loads(p)))
        except ValueError:
            return False

    return round(sum(map(ok, preds)) / max(1, len(preds)), 4)


def score(student: list[str | None], teacher: list[str], schema: dict | None = None) -> dict:
    out = {"n": len(teacher), "exact_json": round(float(exact_match(student, teacher).mean()), 4), "schema_valid": schema_valid(student, schema)}
    for f, m in structured_metrics(student, teacher).items():
        out[f] = {k: (round(m[k], 4) if m[k] is not None else None) for k in ("micro_f1", "macro_f1", "exact")}
    return out


def _train(kind: str, section: dict, rows: list[dict], workdir: Path):
    from student import load_student
    from student.config import student_config
    from student.train import run_train

    rd = RunDir.create(workdir / kind, "bench")
    write_jsonl(rd.filter_kept, rows)
    sec = {k: v for k, v in section.items() if k not in ("classifier", "causal_lm", "kind")}
    sec.update(section.get(kind) or {})
    cfg = student_config({**sec, "kind": kind})
    load0 = os.getloadavg()[0]
    t0 = time.time()
    m = run_train(cfg, rd)
    figs = {"kind": kind, "train_examples": m.get("train_examples"), "train_s": round(time.time() - t0, 1), "load_avg_1m_at_start": round(load0, 2),
            "threads": m.get("threads"), "steps": m.get("steps"), "val_accuracy": m.get("val_accuracy")}
    return load_student(rd.model_dir), figs


def _predict(st, items: list[dict]) -> tuple[list[str], float]:
    t0 = time.time()
    preds = st.predict([r["messages"] for r in items])
    return preds, time.time() - t0


def _trained(run: Path):
    """The encoder the run's own train stage made (same split, same config): no second training."""
    from student import load_student

    rd = RunDir(run)
    m = json.loads(rd.train_metrics.read_text())
    if m.get("kind") != "classifier":
        raise SystemExit(f"--encoder-run {run}: its student is {m.get('kind')!r}, not the encoder")
    figs = {"kind": "classifier", "from_run": str(run), "train_examples": m.get("train_examples"), "train_s": m.get("wall_s") or m.get("train_s"),
            "threads": m.get("threads"), "steps": m.get("steps"), "val_accuracy": m.get("val_accuracy")}
    return load_student(rd.model_dir), figs


def run_encoder(section: dict, kept: list[dict], hold: list[dict], n_lm: int, schema: dict | None, workdir: Path, from_run: Path | None = None) -> dict:
    st, res = _trained(from_run) if from_run else _train("classifier", section, kept, workdir)
    preds, s = _predict(st, hold)
    teacher = [r["response"] for r in hold]
    res.update({"predict_s": round(s, 1), "per_answer_ms": round(1000 * s / max(1, len(hold)), 1), "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                "holdout": score(preds, teacher, schema), "holdout_lm_subset": score(preds[:n_lm], teacher[:n_lm], schema),
                "holdout_span_errors": span_breakdown(hold, preds)})
    return res


def span_breakdown(items: list[dict], preds: list[str]) -> dict:
    """bench/span_errors.py's error types for the `slots` object (missed / boundary / wrong name / extra)."""
    from bench.span_errors import breakdown
    from core.answer_shape import last_user_text
    from eval.metrics import parse_output

    def slots(text: str | None) -> dict:
        v = parse_output(text)
        return (v.get("slots") or {}) if isinstance(v, dict) else {}

    b = breakdown([(last_user_text(r["messages"]), slots(p), slots(r["response"])) for r, p in zip(items, preds)])
    return {k: b[k] for k in ("gold", "predicted", "correct", "micro_f1", "errors", "confusions")}


def run_causal_lm(section: dict, kept: list[dict], hold: list[dict], n_train: int, epochs: float, n_lm: int, schema: dict | None, workdir: Path) -> dict:
    train = [r for r in kept if r.get("split", "train") == "train"][:n_train]
    sec = {**section, "epochs": epochs}
    st, res = _train("causal_lm", sec, train + hold, workdir)
    items = hold[:n_lm]
    teacher = [r["response"] for r in items]
    res["decoding"] = {}
    for mode in ("off", "on"):
        note = st.set_output_schema(schema, mode, [r["response"] for r in train])
        preds, s = _predict(st, items)
        res["decoding"][mode] = {"note": note.get("note") or note.get("constrained_decoding"), "predict_s": round(s, 1),
                                 "per_answer_ms": round(1000 * s / max(1, len(items)), 1), "holdout_lm_subset": score(preds, teacher, schema),
                                 "example_invalid": next((p for p in preds if schema_valid([p], schema) == 0), None)}
    res["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    return res


def _line(name: str, h: dict) -> str:
    fields = ", ".join(f"{f} micro-F1 {v['micro_f1']}" for f, v in h.items() if isinstance(v, dict))
    return f"{name:>26}: exact JSON {h['exact_json']:.3f} on {h['n']}, schema-valid {h['schema_valid']}, {fields}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a run dir whose filter stage is done")
    ap.add_argument("--config", default=str(REPO / "examples/nluplusplus/distill.yaml"), help="root config whose student section is used")
    ap.add_argument("--kinds", default="classifier,causal_lm", help="comma-separated kinds to train: classifier, causal_lm")
    ap.add_argument("--set", action="append", default=[], metavar="student.KEY=VALUE", help="override a student option (repeatable; dotted for subsections)")
    ap.add_argument("--lm-train", type=int, default=192, help="training records the causal LM trains on (a subset: it must finish on 2 loaded cores)")
    ap.add_argument("--lm-epochs", type=float, default=1.0, help="causal-LM epochs over that subset")
    ap.add_argument("--lm-eval", type=int, default=40, help="holdout items the causal LM predicts, each mode (the encoder is scored on them too)")
    ap.add_argument("--lm-max-train-s", type=float, default=900, help="wall-clock cap on causal-LM training")
    ap.add_argument("--encoder-run", type=Path, default=None, help="score the encoder this run's train stage made (same split) instead of training one; the causal LM then runs first")
    args = ap.parse_args()

    from distill.config import load_config

    cfg = load_config(args.config, [s if s.startswith("student.") else f"student.{s}" for s in args.set])
    section = cfg.student.model_dump(mode="json", exclude_unset=False)
    rd = RunDir(args.run)
    schema = json.loads(rd.output_schema.read_text())["schema"] if rd.output_schema.is_file() else None
    kept = list(read_jsonl(rd.filter_kept))
    hold = [r for r in kept if r.get("split") == "holdout"]
    n_lm = min(args.lm_eval, len(hold))
    print(f"data: {sum(r.get('split', 'train') == 'train' for r in kept)} train, {len(hold)} holdout; cores {os.cpu_count()}, load {os.getloadavg()}; "
          f"schema {'from the filter stage' if schema else 'none'}", flush=True)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    results: dict = {"lm_subset": {"train": args.lm_train, "epochs": args.lm_epochs, "eval": n_lm}}
    t_all = time.time()
    order = sorted(kinds, key=lambda k: (k == "classifier") == (args.encoder_run is not None))  # a trained encoder: read last
    with tempfile.TemporaryDirectory(prefix="bench-shapes-") as tmp:
        for kind in order:
            if kind == "classifier":
                r = results["encoder"] = run_encoder(section, kept, hold, n_lm, schema, Path(tmp), args.encoder_run)
                print(_line("encoder", r["holdout"]) + f"; train {r['train_s']} s{' (its run)' if r.get('from_run') else ''}, predict {r['per_answer_ms']} ms/answer, "
                      f"load {r.get('load_avg_1m_at_start', '-')}->{r['load_avg_1m_at_end']}", flush=True)
                print(_line(f"encoder, first {n_lm}", r["holdout_lm_subset"]), flush=True)
                print(f"{'encoder slot errors':>26}: {r['holdout_span_errors']['errors']}", flush=True)
                shutil.rmtree(Path(tmp) / "classifier", ignore_errors=True)
            elif kind == "causal_lm":
                lm_section = {**section, "max_train_s": args.lm_max_train_s}
                if "serve_engine" in (section.get("causal_lm") or {}):  # transformers decoding, the path constrained decoding runs on
                    lm_section["causal_lm"] = {**section["causal_lm"], "serve_engine": "hf"}
                r = results["causal_lm"] = run_causal_lm(lm_section, kept, hold, args.lm_train, args.lm_epochs, n_lm, schema, Path(tmp))
                print(f"causal LM: {r['train_examples']} training records, {r['steps']} steps, train {r['train_s']} s (a deliberately small run)", flush=True)
                for mode, d in r["decoding"].items():
                    print(_line(f"causal LM, constrained {mode}", d["holdout_lm_subset"]) + f"; {d['per_answer_ms']} ms/answer", flush=True)
    results["total_wall_s"] = round(time.time() - t_all, 1)
    results["load_avg_end"] = os.getloadavg()
    print(json.dumps({"bench": "shapes", "results": results}))


if __name__ == "__main__":
    main()
