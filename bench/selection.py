"""Diversity selection against uniform on a skewed Banking77 log, at the same replay budget.

    python bench/selection.py [--budget 100] [--zipf 0.8] [--max-per-label 120]

Builds a log where intent k (in a seeded random order) has max_per_label * (k+1)^-zipf requests
(at least 1): a few intents are common, many are rare, as in production. Then, for each
strategy, selects `budget` prompts with ingest.selection (the diversity strategy embeds with
the bundled MiniLM, the encoder student's base model) and fits the cheapest student on the
teacher's (gold) labels of the selection: logistic regression on frozen MiniLM embeddings.
Prints, per strategy, the labels with at least one selected example and the student's
agreement with the teacher on held-out requests of every label and of the rarest quartile.
uniform (the baseline) and diversity run in the same process on the same log. Ends with ONE JSON line.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.base import write_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402
from distill import stages  # noqa: E402
from distill.config import DistillConfig  # noqa: E402
from ingest.config import SelectConfig  # noqa: E402
from ingest.selection import prompt_text, select_prompts  # noqa: E402


def load(path: Path) -> tuple[list[dict], dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    gold = {}
    with open(path.parent / "reference_answers.jsonl", encoding="utf-8") as f:
        for line in f:
            a = json.loads(line)
            gold[a["id"]] = json.loads(a["response"])["intent"]
    return rows, gold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--zipf", type=float, default=0.8)
    ap.add_argument("--max-per-label", type=int, default=120)
    ap.add_argument("--test-per-label", type=int, default=8)
    ap.add_argument("--clusters", type=int, default=None, help="diversity: k-means clusters (default: the strategy's)")
    ap.add_argument("--embed-cache", help="a .npz file to keep embeddings in between runs of this bench")
    args = ap.parse_args()
    t0 = time.time()
    rows, gold = load(ROOT / "examples/banking77/prompt_log.jsonl.gz")
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(gold[r["id"]], []).append(r)
    rng = random.Random(0)
    labels = sorted(by_label)
    rng.shuffle(labels)
    log, test = [], []
    sizes = {}
    for k, lab in enumerate(labels):
        recs = by_label[lab]
        n = max(1, round(args.max_per_label * (k + 1) ** -args.zipf))
        sizes[lab] = n
        log += recs[:n]
        test += recs[n:n + args.test_per_label]  # held out: never selectable
    log.sort(key=lambda r: r["timestamp"])
    rare = set(sorted(labels, key=lambda lab: sizes[lab])[:len(labels) // 4])
    print(f"skewed log: {len(log)} requests over {len(labels)} intents (largest {max(sizes.values())}, "
          f"{sum(1 for v in sizes.values() if v <= 2)} with <= 2); rarest quartile: {len(rare)} intents; "
          f"budget {args.budget}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)

    cfg = DistillConfig()
    cfg.select = SelectConfig(max_prompts=args.budget, strategy="diversity")
    encode = stages._embedder(cfg)  # the runner's own embedding function
    cache: dict[str, np.ndarray] = {}
    if args.embed_cache and Path(args.embed_cache).is_file():
        z = np.load(args.embed_cache, allow_pickle=False)
        cache = dict(zip(z["texts"].tolist(), z["vectors"]))
    t_embed = [0.0]

    def embed(texts: list[str]) -> np.ndarray:
        uncached = [t for t in dict.fromkeys(texts) if t not in cache]
        if uncached:
            t = time.time()
            for text, v in zip(uncached, encode(uncached)):
                cache[text] = v
            t_embed[0] += time.time() - t
        return np.stack([cache[t] for t in texts])

    from sklearn.linear_model import LogisticRegression

    Xt = embed([prompt_text(r) for r in test])
    yt = np.array([gold[r["id"]] for r in test])
    rare_mask = np.isin(yt, list(rare))
    results = {}
    with tempfile.TemporaryDirectory(prefix="select-bench-") as tmp:
        rd = RunDir.create(Path(tmp) / "runs", "bench")
        write_jsonl(rd.ingest_train, [{**r, "split": "train"} for r in log])
        for strategy in ("uniform", "diversity"):
            t = time.time()
            sel_cfg = SelectConfig(max_prompts=args.budget, strategy=strategy, reservoir=len(log), clusters=args.clusters)
            select_prompts(sel_cfg, rd, embed=embed)
            chosen = [json.loads(x) for x in rd.select_train.read_text().splitlines()]
            y = [gold[r["id"]] for r in chosen]
            X = embed([prompt_text(r) for r in chosen])
            clf = LogisticRegression(max_iter=2000, C=10.0).fit(X, y) if len(set(y)) > 1 else None
            pred = clf.predict(Xt) if clf is not None else np.array([y[0]] * len(yt))
            cover = Counter(y)
            results[strategy] = {
                "selected": len(chosen), "labels_covered": len(cover), "labels_total": len(labels),
                "rare_labels_covered": sum(1 for lab in rare if cover[lab]), "rare_labels": len(rare),
                "agreement_all": round(float((pred == yt).mean()), 4),
                "agreement_rarest_quartile": round(float((pred[rare_mask] == yt[rare_mask]).mean()), 4),
                "select_s": round(time.time() - t, 1),
            }
            r = results[strategy]
            print(f"{strategy:>9}: {r['labels_covered']}/{r['labels_total']} intents with >= 1 example "
                  f"({r['rare_labels_covered']}/{r['rare_labels']} of the rarest quartile); student agreement "
                  f"{r['agreement_all']:.1%} overall, {r['agreement_rarest_quartile']:.1%} on the rarest quartile", flush=True)
    if args.embed_cache:
        np.savez(args.embed_cache, texts=np.array(list(cache)), vectors=np.stack(list(cache.values())))
    print(json.dumps({"bench": "select", "log_records": len(log), "test_records": len(test), "budget": args.budget,
                      "zipf": args.zipf, "embed_s": round(t_embed[0], 1), "wall_s": round(time.time() - t0, 1),
                      "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(), **results}))


if __name__ == "__main__":
    main()
