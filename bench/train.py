"""Bench: the classifier student on Banking77 vs a frozen-embedding + logistic-regression baseline.

    python bench/train.py [--run-dir RUN] [--set student.key=value ...] [--skip-baseline]

Data: examples/banking77 (reference_answers.jsonl = gold labels = what the reference teacher
answers, joined with prompt_log.jsonl.gz for the full messages); falls back to
../shared/data/banking77/train.csv (beside the checkout). Holdout: 15 % by the ingest rule (stable_hash of the
record id as a fraction of 16**16, below 0.15 -> holdout). With --run-dir, trains on that run's
filter/kept.jsonl and scores on its ingest/holdout.jsonl against the reference answers.

Prints student accuracy, baseline accuracy, wall time, examples/s; the last line is ONE JSON
object with the figures.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.base import read_jsonl, stable_hash, write_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402

EX = ROOT / "examples" / "banking77"
# The shared data directory beside the checkout (../shared/data), or $DISTILL_SHARED_DATA.
CSV = Path(os.environ.get("DISTILL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "banking77" / "train.csv"
HOLDOUT = 0.15


def is_holdout(rid: str, fraction: float = HOLDOUT) -> bool:
    return int(stable_hash(rid), 16) / 16**16 < fraction


def load_records() -> list[dict]:
    """[{id, messages, response(gold)}] for all of Banking77 train."""
    if (EX / "reference_answers.jsonl").is_file():
        gold = {r["id"]: r["response"] for r in read_jsonl(EX / "reference_answers.jsonl")}
        msgs = {}
        if (EX / "prompt_log.jsonl.gz").is_file():
            with gzip.open(EX / "prompt_log.jsonl.gz", "rt", encoding="utf-8") as f:
                for line in f:
                    r = json.loads(line)
                    msgs[r["id"]] = r["messages"]
        refs = list(read_jsonl(EX / "reference_answers.jsonl"))
        return [{"id": r["id"], "messages": msgs.get(r["id"]) or [{"role": "user", "content": r["user"]}], "response": gold[r["id"]]} for r in refs]
    with open(CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{"id": f"b77-{i}", "messages": [{"role": "user", "content": r["text"]}], "response": json.dumps({"intent": r["category"]})} for i, r in enumerate(rows)]


def user_text(messages: list[dict]) -> str:
    from student.classifier import input_text

    return input_text(messages)


def baseline(train: list[dict], hold: list[dict], cache_dir: Path, threads: int) -> dict:
    """Frozen all-MiniLM-L6-v2 (mean pooling + L2 norm, as sentence-transformers) + sklearn LR."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel, AutoTokenizer

    from student.models import bundled_encoder

    torch.set_num_threads(threads)
    t0 = time.time()
    texts = [user_text(r["messages"]) for r in train + hold]
    cache = cache_dir / f"b77-emb-{stable_hash(texts)}.npy"
    if cache.is_file():
        X = np.load(cache)
    else:
        path = bundled_encoder().name_or_path
        tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        X = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(order), 128):
                idx = order[s : s + 128]
                b = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt")
                h = model(**b).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).float()
                X[idx] = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.save(cache, X)
    enc_s = time.time() - t0
    y = [r["response"] for r in train + hold]
    clf = LogisticRegression(C=10.0, max_iter=2000)
    clf.fit(X[: len(train)], y[: len(train)])
    acc = float((clf.predict(X[len(train) :]) == np.array(y[len(train) :])).mean())
    return {"baseline_accuracy": round(acc, 4), "baseline_wall_s": round(time.time() - t0, 1), "baseline_encode_s": round(enc_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description="Banking77 classifier-student bench")
    ap.add_argument("--run-dir", type=Path, help="use this run's filter/kept.jsonl + ingest/holdout.jsonl")
    ap.add_argument("--set", action="append", default=[], metavar="student.KEY=VALUE", help="override a ClassifierStudentConfig field")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = auto: idle cores)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N records (smoke runs)")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "distill-bench-cache")
    args = ap.parse_args()

    import torch
    import yaml

    from student import load_student
    from student.config import ClassifierStudentConfig
    from student.threads import auto_threads
    from student.train import run_train

    torch.set_num_threads(args.threads or auto_threads())
    overrides = {}
    for item in args.set:
        k, v = item.split("=", 1)
        overrides[k.removeprefix("student.")] = yaml.safe_load(v)
    cfg = ClassifierStudentConfig(**{"num_threads": args.threads, **overrides}) if args.threads else ClassifierStudentConfig(**overrides)

    records = load_records()
    gold = {r["id"]: r["response"] for r in records}
    if args.run_dir:
        rd = RunDir(args.run_dir)
        train = [r for r in read_jsonl(rd.path / "filter" / "kept.jsonl") if r.get("split") == "train"]
        hold = [r for r in read_jsonl(rd.path / "ingest" / "holdout.jsonl")]
        hold = [{**r, "response": gold.get(r["id"], r.get("response"))} for r in hold]
    else:
        if args.limit:
            records = records[: args.limit]
        train = [{**r, "split": "train"} for r in records if not is_holdout(r["id"])]
        hold = [r for r in records if is_holdout(r["id"])]
        rd = RunDir.create(Path(tempfile.mkdtemp(prefix="b77-bench-")), "bench")
        write_jsonl(rd.path / "filter" / "kept.jsonl", train)
    print(f"train {len(train)}  holdout {len(hold)}  run dir {rd.path}", flush=True)

    figures: dict = {"train_records": len(train), "holdout_records": len(hold), "config": {k: v for k, v in cfg.model_dump(mode="json").items() if k != "lora"} | {"lora": cfg.lora.model_dump()}}
    if not args.skip_baseline:
        figures.update(baseline(train, hold, args.cache_dir, args.threads or auto_threads()))
        print(f"baseline (frozen MiniLM + LR): accuracy {figures['baseline_accuracy']:.4f}  ({figures['baseline_wall_s']} s)", flush=True)

    t0, c0 = time.time(), time.process_time()
    metrics = run_train(cfg, rd)
    train_wall, train_cpu = time.time() - t0, time.process_time() - c0
    student = load_student(rd.path / "train" / "model")
    t1 = time.time()
    preds = student.predict([r["messages"] for r in hold])
    pred_s = time.time() - t1
    acc = sum(p == r["response"] for p, r in zip(preds, hold)) / max(1, len(hold))
    figures.update({
        "student_kind": metrics["kind"], "student_accuracy": round(acc, 4), "train_wall_s": round(train_wall, 1),
        # CPU seconds: on a shared machine wall time mostly measures the neighbours; with one
        # torch thread this is about the wall time the stage takes on one free core.
        "train_cpu_s": round(train_cpu, 1),
        "train_examples_per_s": metrics["examples_per_s"], "steps": metrics["steps"], "best_step": metrics["best_step"],
        "val_accuracy": metrics["val_accuracy"], "val_loss": metrics["val_loss"], "stopped_early": metrics["stopped_early"],
        "predict_examples_per_s": round(len(hold) / pred_s, 1), "run_dir": str(rd.path),
        "threads": metrics.get("threads"), "load_avg_1m_at_end": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
    })
    print(f"student ({metrics['kind']}): accuracy {acc:.4f}  train wall {train_wall:.0f} s (cpu {train_cpu:.0f} s)  {metrics['examples_per_s']} ex/s  "
          f"predict {figures['predict_examples_per_s']} ex/s", flush=True)
    if "baseline_accuracy" in figures:
        print(f"student - baseline: {acc - figures['baseline_accuracy']:+.4f}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
