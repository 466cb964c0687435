"""Serving speed of a classifier student: fp32 vs the int8, ONNX Runtime fp32 and static-int8 ONNX
fast paths (student/fast_path.py, student/onnx_path.py, student/onnx_quant.py).

The server runs in its own process (student.serve_process, as `distill serve` does); this process
is only the load generator (aiohttp, one event loop), so the two never share an interpreter lock.
For each path, interleaved over --rounds so machine load hits all alike: req/s and p50/p95 at
concurrency 1 and 32, the load average beside each, and each path's ratio to fp32 in the same
round (the machine is shared: the ratio is the figure that travels). The fast-path choice
(agreement on the run's validation split, scored against the kNN memory's training rows) is made
first on a copy of the model, and every path's validation agreement (and, for the int8 paths, the
share of answers that change between batch 1 and batched) is printed; the model given is never
modified. Also printed: how many padded tokens a batch of 32 holdout requests carries per real
token (the server pads each batch to its longest member). Targets (#14): >= 1.8x fp32's 135 req/s at concurrency 32 with p95 <= 200 ms
there, p95 <= 25 ms at concurrency 1.

    .venv/bin/python bench/serve_classifier.py --run /tmp/demo/data/runs/banking77-... [--threads 1]

Prints a table and ends with one JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


async def _load(url: str, prompts: list[list[dict]], n: int, concurrency: int) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def one(i: int) -> None:
            nonlocal errors
            async with sem:
                t0 = time.perf_counter()
                async with s.post(f"{url}/chat/completions", json={"model": "student", "messages": prompts[i % len(prompts)]}) as r:
                    body = await r.json()
                    if r.status != 200 or not body.get("choices"):
                        errors += 1
                lat.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(one(i) for i in range(min(n, 2 * concurrency + 10))))  # warm-up: connections, first batches
        lat.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    p50, p95 = np.percentile(lat, [50, 95])
    return {"rps": round(n / wall, 1), "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "errors": errors}


def _padding(student, prompts: list[list[dict]], batch: int = 32) -> dict:
    """Token counts of the holdout requests and the padding a batch of `batch` of them (arrival
    order, as the micro-batcher takes them; predict_scored sorts within it) costs per real token."""
    from student.classifier import input_text

    lens = [len(x) for x in student.encode([input_text(m) for m in prompts])]
    padded = sum(max(lens[i:i + batch]) * len(lens[i:i + batch]) for i in range(0, len(lens), batch))
    return {"mean_tokens": round(sum(lens) / len(lens), 1), "max_tokens": max(lens), "padded_per_real_token": round(padded / sum(lens), 3)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a run directory with a trained classifier (train/model) and filter/kept.jsonl")
    ap.add_argument("--threads", type=int, default=None, help="server torch threads (default: idle cores)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n1", type=int, default=200, help="requests at concurrency 1")
    ap.add_argument("--n32", type=int, default=1000, help="requests at concurrency 32")
    ap.add_argument("--val-fraction", type=float, default=0.1)
    ap.add_argument("--paths", default="fp32,int8,onnx,onnx_int8", help="comma-separated paths to serve (fp32 always: the baseline)")
    ap.add_argument("--skip-choice", action="store_true",
                    help="skip the fast-path choice (~4 min on 2 busy cores): only build the ONNX files and score their agreement")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from core.base import read_jsonl
    from core.rundir import RunDir
    from student import fast_path
    from student.serve_process import ChildStudentServer
    from student.train import load_examples, split_validation

    rd = RunDir(args.run)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model = tmp / "model"
    shutil.copytree(rd.model_dir, model)
    train, val = split_validation(load_examples(rd), args.val_fraction)
    t0 = time.perf_counter()
    vm, vt = [e.messages for e in val], [e.target for e in val]
    choice = ({"choice": "skipped", "reason": "--skip-choice"} if args.skip_choice else
              fast_path.choose(model, vm, vt, n_train=len(train), calibration=[e.messages for e in train]))
    fast_path.record(model, choice)
    print(f"fast-path choice on {len(val)} validation examples ({time.perf_counter() - t0:.0f} s): {choice['choice']} - {choice['reason']}")
    from student import onnx_path, onnx_quant
    from student.classifier import input_text
    from student.kinds import load_student

    if not (model / onnx_path.ONNX_FILE).is_file():
        onnx_path.export_saved(model)  # the servers below load it instead of exporting on start
    if not (model / onnx_quant.ONNX_INT8_FILE).is_file():  # not chosen (the choice keeps only what it serves): build it to measure
        onnx_quant.build(load_student(model), model, [input_text(e.messages) for e in train])
    # The choice stops at the first (fastest) path that keeps fp32's agreement: score the rest here.
    agreement = choice.setdefault("agreement", {})
    for name in ("int8", "onnx", "onnx_int8"):
        flips_key = f"{name}_batch_flips" if name.endswith("int8") else None  # answers that may depend on the batch
        if name in agreement and (flips_key is None or flips_key in choice):
            continue
        a, flips, _ = fast_path.score_path(name, model, vm, vt, len(train), [e.messages for e in train])
        agreement[name] = round(a, 5)
        if flips_key:
            choice[flips_key] = round(flips, 5)
    print(f"validation agreement per path: {choice.get('agreement')}; batch flips: int8 {choice.get('int8_batch_flips')} "
          f"onnx_int8 {choice.get('onnx_int8_batch_flips')}")
    prompts = [r["messages"] for r in read_jsonl(rd.filter_kept) if r.get("split") == "holdout"][:500]
    pad = _padding(load_student(model), prompts)
    print(f"padding: a batch of 32 holdout requests pads to {pad['padded_per_real_token']:.2f} tokens per real token "
          f"(mean {pad['mean_tokens']:.1f} tokens, longest {pad['max_tokens']})")

    rows: dict[str, list[dict]] = {p: [] for p in dict.fromkeys(["fp32", *args.paths.split(",")])}
    for rnd in range(args.rounds):
        for path in rows:
            with ChildStudentServer(model, fast_path=path, num_threads=args.threads) as url:
                c1 = asyncio.run(_load(url, prompts, args.n1, 1))
                c32 = asyncio.run(_load(url, prompts, args.n32, 32))
            load = os.getloadavg()[0]
            rows[path].append({"c1": c1, "c32": c32, "load1": round(load, 2)})
            print(f"round {rnd} {path:5s} c1 {c1['rps']:7.1f} req/s p50 {c1['p50_ms']:6.1f} p95 {c1['p95_ms']:6.1f} | "
                  f"c32 {c32['rps']:7.1f} req/s p50 {c32['p50_ms']:6.1f} p95 {c32['p95_ms']:6.1f} | load {load:.2f}", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)

    def best(path: str, level: str, key: str, fn=max):
        return fn(r[level][key] for r in rows[path])

    summary = {
        "bench": "serve_classifier", "model": str(rd.model_dir), "threads": args.threads, "choice": choice, "padding": pad,
        "rounds": rows,
        "c32_rps": {p: best(p, "c32", "rps") for p in rows}, "c32_p95_ms": {p: best(p, "c32", "p95_ms", min) for p in rows},
        "c1_p95_ms": {p: best(p, "c1", "p95_ms", min) for p in rows},
    }
    summary["c32_speedup"] = {p: round(summary["c32_rps"][p] / summary["c32_rps"]["fp32"], 2) for p in rows}
    if "onnx" in rows:
        summary["c32_vs_onnx"] = {p: round(summary["c32_rps"][p] / summary["c32_rps"]["onnx"], 2) for p in rows}
    # per-round ratios to fp32 in the same round (machine load moves between rounds)
    summary["c32_ratio_per_round"] = {p: [round(r["c32"]["rps"] / f["c32"]["rps"], 2) for r, f in zip(rows[p], rows["fp32"])] for p in rows}
    summary["targets"] = {p: {"c32_ge_1.8x_135": summary["c32_rps"][p] >= 1.8 * 135, "c32_p95_le_200": summary["c32_p95_ms"][p] <= 200,
                              "c1_p95_le_25": summary["c1_p95_ms"][p] <= 25} for p in rows}
    summary["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
