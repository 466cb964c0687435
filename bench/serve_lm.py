"""Bench: a causal-LM student (SmolLM2-135M + LoRA, NLU++) served through `distill serve`, llama.cpp
engine vs the HF (transformers eager) engine, same model, same run.

    python bench/serve_lm.py --model DIR [--n 40] [--threads N]
    python bench/serve_lm.py --train-quick 240 [--n 40]    # fine-tunes a small student first (a few minutes idle)

Each engine runs as `distill serve --model DIR --engine E` in its own process; this process is
only the load generator (aiohttp, one connection: concurrency 1, the latency an interactive
caller sees). Requests are the NLU++ holdout prompts (examples/nluplusplus, the 15 % holdout
ingest keeps), the same ones for both engines. Per engine: p50/p95 latency, decode tokens/s
(completion tokens / request wall time, the prompt included: what a caller gets), exact-JSON
agreement with the teacher's answers (parsed objects equal), and the share of answers identical to
the HF engine's. The acceptance line: llama.cpp p50 <= 300 ms and p95 <= 600 ms on 2 cores and no
loss of exact-JSON agreement against HF. Prints a table, the load average, and ONE JSON line.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

TOK = None  # the student's tokenizer: completion tokens counted alike for both engines


def holdout(n: int) -> list[dict]:
    import gzip

    from core.base import stable_hash
    from ingest.pipeline import in_holdout

    rows = []
    with gzip.open(REPO / "examples" / "nluplusplus" / "prompt_log.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if in_holdout(r["id"], 0.15):
                rows.append({"id": r["id"], "messages": r["messages"], "response": r["response"]["content"]})
    return sorted(rows, key=lambda e: stable_hash(["serve_lm", e["id"]]))[:n]


def train_quick(n_train: int, out: Path) -> Path:
    """A small fine-tune (LoRA r16, 2 epochs on n_train NLU++ training rows), decoding under the
    example's schema: enough for the engines to disagree if they can."""
    import gzip

    from core.base import stable_hash
    from ingest.pipeline import in_holdout
    from student.causal_lm import CausalLMStudent
    from student.config import CausalLMStudentConfig, LoraConfig

    rows = []
    with gzip.open(REPO / "examples" / "nluplusplus" / "prompt_log.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if not in_holdout(r["id"], 0.15):
                rows.append({"id": r["id"], "messages": r["messages"], "response": r["response"]["content"]})
    rows = sorted(rows, key=lambda e: stable_hash(["bench", e["id"]]))[:n_train]
    cfg = CausalLMStudentConfig(batch_size=8, epochs=2, learning_rate=2e-3, max_seq_length=128, max_new_tokens=96, checkpoint_every_steps=1000,
                                early_stopping_patience=0, warmup_ratio=0.05, seed=0, lora=LoraConfig(r=16, alpha=32, dropout=0.0))
    s = CausalLMStudent()
    s.fit(rows, [], cfg, out / "work", progress=False)
    schema = json.loads((REPO / "examples" / "nluplusplus" / "output_schema.json").read_text())
    s.set_output_schema(schema, "on", [r["response"] for r in rows])
    s.save(out / "model")
    return out / "model"


class Server:
    """`distill serve --model M --engine E` in a child process; the URL from its first line."""

    def __init__(self, model: Path, engine: str, threads: int | None, data_dir: Path):
        cmd = [str(REPO / ".venv" / "bin" / "distill"), "serve", "--model", str(model), "--engine", engine, "--port", "0",
               "--data-dir", str(data_dir)]
        if not Path(cmd[0]).exists():
            cmd[:1] = [sys.executable, "-m", "distill.cli"]
        if threads:
            cmd += ["--threads", str(threads)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("DISTILL_SERVE_API_KEY", None)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            m = re.search(r" at (http://\S+/v1)", line)
            if m:
                self.url, self.line = m.group(1), line.strip()
                break
        else:
            raise RuntimeError(f"distill serve --engine {engine} did not start: {''.join(lines)[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def run_requests(url: str, rows: list[dict]) -> dict:
    import aiohttp

    lat, outs, ctoks = [], [], []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
        async def one(msgs):
            t0 = time.perf_counter()
            async with s.post(f"{url}/chat/completions", json={"model": "student", "messages": msgs}) as r:
                body = await r.json()
            return (time.perf_counter() - t0) * 1000, body

        for r in rows[:2]:  # warm-up: connection, first-call paths
            await one(r["messages"])
        for r in rows:
            ms, body = await one(r["messages"])
            lat.append(ms)
            outs.append(body["choices"][0]["message"]["content"])
            ctoks.append(len(TOK(outs[-1], add_special_tokens=False)["input_ids"]) + 1)  # one tokenizer for both; + end-of-turn
    p50, p95 = np.percentile(lat, [50, 95])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1), "tokens_per_s": round(sum(ctoks) / (sum(lat) / 1000), 1),
            "mean_completion_tokens": round(float(np.mean(ctoks)), 1), "answers": outs}


def parse(t: str):
    try:
        return json.loads(t)
    except (TypeError, ValueError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a saved causal-LM student directory")
    ap.add_argument("--train-quick", type=int, metavar="N", help="fine-tune a small student on N training rows first")
    ap.add_argument("--n", type=int, default=40, help="holdout requests per engine")
    ap.add_argument("--threads", type=int, help="server threads (default: the idle cores, as distill serve picks)")
    ap.add_argument("--engines", default="hf,llamacpp")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve_lm-"))
    model = Path(a.model) if a.model else train_quick(a.train_quick or 240, work)
    rows = holdout(a.n)
    global TOK
    from transformers import AutoTokenizer

    TOK = AutoTokenizer.from_pretrained(model / "merged")
    load0 = os.getloadavg()
    res: dict[str, dict] = {}
    for eng in a.engines.split(","):
        srv = Server(model, eng, a.threads, work / "data")
        try:
            res[eng] = {**asyncio.run(run_requests(srv.url, rows)), "server": srv.line}
        finally:
            srv.stop()
    load1 = os.getloadavg()
    teacher = [parse(r["response"]) for r in rows]
    for eng, r in res.items():
        r["exact_json_agreement"] = round(sum(parse(o) == t for o, t in zip(r["answers"], teacher)) / len(rows), 4)
        r["parse_valid"] = round(sum(parse(o) is not None for o in r["answers"]) / len(rows), 4)
        if "hf" in res:
            r["same_as_hf"] = round(sum(o == h for o, h in zip(r["answers"], res["hf"]["answers"])) / len(rows), 4)
    print(f"{'engine':10}{'p50 ms':>9}{'p95 ms':>9}{'tok/s':>8}{'exact JSON':>12}{'same as HF':>12}")
    for eng, r in res.items():
        print(f"{eng:10}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['tokens_per_s']:>8}{r['exact_json_agreement']:>12}{r.get('same_as_hf', ''):>12}")
    print(f"load average: start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (2 cores, shared)")
    lc, hf = res.get("llamacpp"), res.get("hf")
    out = {"bench": "serve_lm", "model": str(model), "trained_quick": a.model is None, "n": len(rows), "threads": a.threads,
           "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in load1],
           **{eng: {k: v for k, v in r.items() if k != "answers"} for eng, r in res.items()}}
    if lc and hf:
        out["speedup_p50"] = round(hf["p50_ms"] / lc["p50_ms"], 2)
        out["tokens_per_s_ratio"] = round(lc["tokens_per_s"] / hf["tokens_per_s"], 2)
        out["acceptance"] = {"p50_le_300ms": lc["p50_ms"] <= 300, "p95_le_600ms": lc["p95_ms"] <= 600,
                             "no_agreement_loss": lc["exact_json_agreement"] >= hf["exact_json_agreement"]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
