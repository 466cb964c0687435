"""Bench: constrained decoding (student/constrained.py, llguidance) vs free decoding, NLU++ slice, CPU.

    python bench/constrained_lm.py [--n-train 192 --epochs 1 --n-eval 60 --threads 1]
    python bench/constrained_lm.py --from-model DIR      # reuse a saved causal-LM student (no training)

Two students, each decoding the same holdout slice twice (free, then under the schema):
1. the untuned base model (bundled SmolLM2-135M-Instruct) prompted with the teacher's system
   prompt - the hard case for format: nothing taught it the JSON shape or the label set;
2. a briefly fine-tuned one (CausalLMStudent.fit, TRL; baked system prompt).
Schema: examples/nluplusplus/output_schema.json (what filter.json_schema names in that example):
intents an array of unique labels from a fixed enum, slots an object of known slot names.
Figures per (student, mode): parse-valid rate, schema-valid rate, exact-JSON agreement, intent and
slot micro-F1, generated tokens/s and answers/s. Ends with ONE JSON line.
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
# not bench/ itself on the path: bench/select.py would shadow the stdlib's select module
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]


def _bench_module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_train_lm = _bench_module("train_lm")
load_split, quality = _train_lm.load_split, _train_lm.quality

SCHEMA = REPO / "examples" / "nluplusplus" / "output_schema.json"


def decode(student, rows: list[dict], schema: dict, targets: list[str]) -> dict:
    """Free, then constrained predictions of `student` on `rows`: figures for each."""
    from jsonschema import Draft202012Validator

    val = Draft202012Validator(schema)
    out = {}
    for mode in ("off", "on"):
        student.set_output_schema(schema, mode, targets)
        t0 = time.time()
        preds = student.predict([r["messages"] for r in rows])
        s = time.time() - t0
        toks = sum(len(student.tok(p, add_special_tokens=False)["input_ids"]) + 1 for p in preds)

        def valid(p: str) -> bool:
            try:
                return not any(True for _ in val.iter_errors(json.loads(p)))
            except ValueError:
                return False

        q = quality(preds, [r["response"] for r in rows])
        out[mode] = {**q, "schema_valid_rate": round(sum(map(valid, preds)) / len(preds), 4), "generate_s": round(s, 1),
                     "generated_tokens_per_s": round(toks / s, 1), "answers_per_s": round(len(preds) / s, 2),
                     "example_bad": next((p for p in preds if not valid(p)), None)}
        print(f"  {mode:>3}: {json.dumps({k: v for k, v in out[mode].items() if k != 'example_bad'})}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=192)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--n-eval", type=int, default=60)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--from-model", type=Path, default=None, help="a saved causal-LM student dir: skip training")
    ap.add_argument("--skip-base", action="store_true", help="only the fine-tuned student")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from student.causal_lm import CausalLMStudent
    from student.config import CausalLMStudentConfig

    pool, hold = load_split()
    train, rows = pool[: a.n_train], hold[: a.n_eval]
    schema = json.loads(SCHEMA.read_text())
    targets = [e["response"] for e in train]
    cfg = CausalLMStudentConfig(batch_size=8, epochs=a.epochs, learning_rate=a.lr, max_seq_length=128, max_new_tokens=96,
                                checkpoint_every_steps=10**6, warmup_ratio=0.05, seed=0)
    t0 = time.time()
    result: dict = {"bench": "constrained_lm", "library": "llguidance", "schema": str(SCHEMA.relative_to(REPO)),
                    "holdout_examples": len(rows), "threads": a.threads, "load_avg_start": os.getloadavg()[0]}
    if not a.skip_base:
        print("untuned base model, system prompt in the input:", flush=True)
        base = CausalLMStudent.create(cfg.model_copy(update={"bake_system_prompt": False}), [])
        base.meta["bake_system_prompt"] = False
        result["base"] = decode(base, rows, schema, targets)
        del base
    if a.from_model:
        tuned = CausalLMStudent.load(a.from_model)
        result["tuned_from"] = str(a.from_model)
    else:
        tuned = CausalLMStudent()
        figs = tuned.fit(train, [], cfg, Path(tempfile.mkdtemp(prefix="bench-cd-")), progress=False)
        result.update({"train_examples": len(train), "train_steps": figs["steps"], "train_loss": figs["train_loss"],
                       "train_tokens_per_s": figs["tokens_per_s"]})
    print(f"fine-tuned student ({result.get('train_steps', 'loaded')} steps):", flush=True)
    result["tuned"] = decode(tuned, rows, schema, targets)
    result.update({"total_wall_s": round(time.time() - t0, 1), "load_avg_end": os.getloadavg()[0]})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
