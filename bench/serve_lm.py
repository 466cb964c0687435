"""Bench: a causal-LM student (SmolLM2-135M + LoRA, NLU++) served through `distill serve`: HF
(transformers eager), llama.cpp as before #14 (llama-cpp-python's generate loop, f16) and
llama.cpp as served now (grammar-first greedy + prompt-lookup speculative decoding, the weight
type the engine choice keeps on validation agreement); same model, same run.

    python bench/serve_lm.py --model DIR [--n 40] [--threads N]
    python bench/serve_lm.py --train-quick 48 [--n 40]    # fine-tunes a small student first (12 steps; a few minutes idle)

Each configuration runs as `distill serve --model DIR --engine E` in its own process; this process
is only the load generator (aiohttp, one connection: concurrency 1, the latency an interactive
caller sees). The configurations are copies of the student directory (weights linked, student.json
copied) with their settings recorded: "llamacpp_before" = {"llamacpp": {"decoder": "generate"}}
and an f16 export; "llamacpp" = the engine choice (student/engine.py select_and_record) run on
--val validation rows (NLU++ training-split rows the quick student did not train on). Requests
are the NLU++ holdout prompts (examples/nluplusplus, the 15 % holdout ingest keeps), the same for
all. Per configuration: p50/p95 latency, decode tokens/s (completion tokens / request wall time,
the prompt included: what a caller gets), exact-JSON agreement with the teacher's answers (parsed
objects equal), and the share of answers identical to the HF engine's and to llama.cpp before's.
The acceptance line: llama.cpp p50 <= 300 ms and p95 <= 600 ms on 2 cores and no loss of
exact-JSON agreement against HF. Prints a table, the load average, and ONE JSON line.
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


def nlupp_rows(holdout_split: bool) -> list[dict]:
    import gzip

    from ingest.pipeline import in_holdout

    rows = []
    with gzip.open(REPO / "examples" / "nluplusplus" / "prompt_log.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if in_holdout(r["id"], 0.15) == holdout_split:
                rows.append({"id": r["id"], "messages": r["messages"], "response": r["response"]["content"]})
    return rows


def train_order(rows: list[dict]) -> list[dict]:
    from core.base import stable_hash

    return sorted(rows, key=lambda e: stable_hash(["bench", e["id"]]))


def holdout(n: int) -> list[dict]:
    from core.base import stable_hash

    return sorted(nlupp_rows(True), key=lambda e: stable_hash(["serve_lm", e["id"]]))[:n]


def train_quick(n_train: int, out: Path) -> Path:
    """A small fine-tune (LoRA r16, 2 epochs on n_train NLU++ training rows), decoding under the
    example's schema: enough for the engines to disagree if they can."""
    from student.causal_lm import CausalLMStudent
    from student.config import CausalLMStudentConfig, LoraConfig

    rows = train_order(nlupp_rows(False))[:n_train]
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


CONFIGS = {"hf": "hf", "llamacpp_before": "llamacpp", "llamacpp": "llamacpp"}  # configuration -> distill serve --engine


def variant(model: Path, out: Path, meta_update: dict) -> Path:
    """A copy of the student directory: weights linked, student.json copied with `meta_update`,
    no GGUF (the variant's settings export their own)."""
    out.mkdir(parents=True)
    for p in model.iterdir():
        if p.name not in ("student.json", "gguf"):
            (out / p.name).symlink_to(p.resolve())
    meta = json.loads((model / "student.json").read_text())
    (out / "student.json").write_text(json.dumps({**meta, **meta_update}, indent=1))
    return out


def engine_choice(model: Path, n_val: int) -> dict:
    """The train stage's end step on the bench's copy: llama.cpp vs HF, then the weight type, on
    n_val validation rows (the last rows of the quick fine-tune's training order: never trained on)."""
    from student.base import Example
    from student.engine import select_and_record

    val = [Example(r["id"], r["messages"], r["response"]) for r in train_order(nlupp_rows(False))[-n_val:]]
    return select_and_record(model, val, "auto")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a saved causal-LM student directory")
    ap.add_argument("--train-quick", type=int, metavar="N", help="fine-tune a small student on N training rows first (48 = 12 steps)")
    ap.add_argument("--n", type=int, default=40, help="holdout requests per configuration")
    ap.add_argument("--val", type=int, default=64, help="validation rows the engine / weight-type choice is made on")
    ap.add_argument("--threads", type=int, help="server threads (default: the idle cores, as distill serve picks)")
    ap.add_argument("--configs", default="hf,llamacpp_before,llamacpp", help=f"comma-separated, from {', '.join(CONFIGS)}")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve_lm-"))
    model = Path(a.model) if a.model else train_quick(a.train_quick or 48, work)
    rows = holdout(a.n)
    global TOK
    from transformers import AutoTokenizer

    TOK = AutoTokenizer.from_pretrained(model / "merged")
    configs = a.configs.split(",")
    dirs, choice = {"hf": model}, None
    if "llamacpp_before" in configs:
        dirs["llamacpp_before"] = variant(model, work / "before", {"llamacpp": {"decoder": "generate"}, "gguf_weight_type": "f16"})
    if "llamacpp" in configs:
        dirs["llamacpp"] = variant(model, work / "after", {"llamacpp": {}, "gguf_weight_type": "f16"})
        t0 = time.perf_counter()
        choice = engine_choice(dirs["llamacpp"], a.val)
        choice["seconds"] = round(time.perf_counter() - t0, 1)
    load0 = os.getloadavg()
    res: dict[str, dict] = {}
    for cfg in configs:
        srv = Server(dirs[cfg], CONFIGS[cfg], a.threads, work / "data")
        try:
            res[cfg] = {**asyncio.run(run_requests(srv.url, rows)), "server": srv.line}
        finally:
            srv.stop()
    load1 = os.getloadavg()
    teacher = [parse(r["response"]) for r in rows]
    for cfg, r in res.items():
        r["exact_json_agreement"] = round(sum(parse(o) == t for o, t in zip(r["answers"], teacher)) / len(rows), 4)
        r["parse_valid"] = round(sum(parse(o) is not None for o in r["answers"]) / len(rows), 4)
        for other in ("hf", "llamacpp_before"):
            if other in res and other != cfg:
                r[f"same_as_{other}"] = round(sum(o == h for o, h in zip(r["answers"], res[other]["answers"])) / len(rows), 4)
    print(f"{'config':17}{'p50 ms':>9}{'p95 ms':>9}{'tok/s':>8}{'exact JSON':>12}{'same as HF':>12}{'same as before':>16}")
    for cfg, r in res.items():
        print(f"{cfg:17}{r['p50_ms']:>9}{r['p95_ms']:>9}{r['tokens_per_s']:>8}{r['exact_json_agreement']:>12}"
              f"{r.get('same_as_hf', ''):>12}{r.get('same_as_llamacpp_before', ''):>16}")
    if choice:
        print(f"engine choice: {choice['choice']} ({choice['reason']}); weight type: "
              f"{json.dumps(choice.get('weight_type', {}).get('tried', {}))} -> {choice.get('weight_type', {}).get('choice', 'f16')}")
    print(f"load average: start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} (2 cores, shared)")
    lc, hf, before = res.get("llamacpp"), res.get("hf"), res.get("llamacpp_before")
    out = {"bench": "serve_lm", "model": str(model), "trained_quick": a.model is None, "n": len(rows), "threads": a.threads,
           "load_avg_start": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in load1], "engine_choice": choice,
           **{cfg: {k: v for k, v in r.items() if k != "answers"} for cfg, r in res.items()}}
    if lc and before:
        out["speedup_p50_vs_before"] = round(before["p50_ms"] / lc["p50_ms"], 2)
    if lc and hf:
        out["speedup_p50_vs_hf"] = round(hf["p50_ms"] / lc["p50_ms"], 2)
        out["tokens_per_s_ratio_vs_hf"] = round(lc["tokens_per_s"] / hf["tokens_per_s"], 2)
        out["acceptance"] = {"p50_le_300ms": lc["p50_ms"] <= 300, "p95_le_600ms": lc["p95_ms"] <= 600,
                             "no_agreement_loss": lc["exact_json_agreement"] >= hf["exact_json_agreement"]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
