"""Bench: a llama.cpp-served causal-LM student when other work shares the machine.

    python bench/serve_lm_load.py --model DIR [--n 30]     # DIR: a student with a GGUF (bench/serve_lm.py's "after" copy)

`distill serve` picks its thread count once, at start (student/threads.py auto_threads); with it
chosen automatically, the llama.cpp engine re-picks it between requests from the cores other
processes use now (ThreadGovernor). Each configuration starts the server on the idle machine,
then a CPU hog (one busy-looping process, standing in for a training job or another server)
takes one core, and the load generator (its own process, concurrency 1) sends the same NLU++
holdout requests: --threads 2 (what an idle start picks, fixed), --threads 1 (the best fixed
choice under this load), auto (adaptive); then auto with no hog, the control. Prints p50/p95 per
configuration and ONE JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_lm  # noqa: E402  (Server, run_requests, holdout: the same server start and load generator)

HOG = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 600: pass\n"  # bounded: stops by itself


def run(model: Path, threads: int | None, hog: bool, rows: list[dict], data: Path) -> dict:
    srv = serve_lm.Server(model, "llamacpp", threads, data)
    h = subprocess.Popen([sys.executable, "-c", HOG]) if hog else None
    try:
        r = asyncio.run(serve_lm.run_requests(srv.url, rows))
    finally:
        if h is not None:
            h.kill()
            h.wait()
        srv.stop()
    return {k: r[k] for k in ("p50_ms", "p95_ms", "tokens_per_s")} | {"load1": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a causal-LM student directory with gguf/student.gguf")
    ap.add_argument("--n", type=int, default=30)
    a = ap.parse_args()
    rows = serve_lm.holdout(a.n)
    from transformers import AutoTokenizer

    serve_lm.TOK = AutoTokenizer.from_pretrained(Path(a.model) / "merged")
    data = Path(tempfile.mkdtemp(prefix="serve_lm_load-"))
    res = {}
    for name, threads, hog in (("fixed2_hog", 2, True), ("fixed1_hog", 1, True), ("auto_hog", None, True), ("auto_idle", None, False)):
        res[name] = run(Path(a.model), threads, hog, rows, data)
        print(f"{name:12} p50 {res[name]['p50_ms']:7.1f} ms  p95 {res[name]['p95_ms']:7.1f} ms  "
              f"{res[name]['tokens_per_s']:5.1f} tokens/s  load {res[name]['load1']}", flush=True)
    res["auto_vs_fixed2_p50_under_hog"] = round(res["fixed2_hog"]["p50_ms"] / res["auto_hog"]["p50_ms"], 2)
    print(json.dumps({"bench": "serve_lm_load", "model": a.model, "n": len(rows), "cpus": os.cpu_count(), **res}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
