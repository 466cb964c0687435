"""Build the BFCL tool-calling demo log: what an assistant with tools would have logged.

Turns the single-turn categories of the Berkeley Function Calling Leaderboard v4 (simple_python,
multiple, parallel, parallel_multiple: 1,000 questions, Apache-2.0), as shipped in the PyPI
package `bfcl-eval`, into:

    prompt_log.jsonl.gz       OpenAI chat-format request log with `tools` per request, in time order;
                              the recorded answer is an assistant message with `tool_calls`
    reference_answers.jsonl   {"id", "user", "tools": the request's tool names (the reference teacher
                              answers by question AND tool set), "response": "", "tool_calls": [{"name", "arguments"}],
                              "possible_answer": BFCL's acceptable values per argument, "category"}
    LICENSE                   the Apache License 2.0 text (bfcl-eval declares the licence but ships no text)

Tools are converted as BFCL converts them for OpenAI-style models (eval/bfcl.py): dotted names
get underscores, Python-flavoured types become JSON-schema types. The reference answer takes the
first acceptable value of every argument and leaves out an argument whose first acceptable value
is BFCL's optional marker "". Evaluate with BFCL's semantics against `possible_answer`
(eval/toolcall_metrics.py), not by exact match against `tool_calls`.

Deterministic: same inputs -> byte-identical outputs.
Run: .venv/bin/python examples/bfcl/build_log.py   (needs: pip install --no-deps bfcl-eval==2026.3.23)
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root: eval/ and core/

from core.toolcall_render import render_tool_calls  # noqa: E402
from eval import bfcl  # noqa: E402
from eval.toolcall_metrics import calls_from_answers  # noqa: E402

SEED = 4
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
DAYS = 14
MODEL = "gpt-4o-2024-08-06"
FEATURE = "assistant-with-tools"
# bfcl-eval declares Apache-2.0 but ships no licence text: the committed copy, else Debian's.
APACHE_TEXTS = [HERE / "LICENSE", Path("/usr/share/common-licenses/Apache-2.0")]


def _apache_text() -> bytes | None:
    for p in APACHE_TEXTS:
        if p.is_file():
            return p.read_bytes()
    return None


def build(out: Path, categories: tuple[str, ...] = bfcl.CATEGORIES) -> dict:
    items = [(cat, it) for cat in categories for it in bfcl.load_category(cat)]
    rng = random.Random(SEED)
    order = list(range(len(items)))
    rng.shuffle(order)  # the categories come one after another; traffic does not
    gaps = [rng.expovariate(1.0) for _ in order]
    scale = DAYS * 86400 / sum(gaps)
    log_lines, ref_lines, seen_users = [], [], {}
    t = 0.0
    n_calls = 0
    for n, k in enumerate(order):
        cat, it = items[k]
        t += gaps[n] * scale
        tools = bfcl.openai_tools(it["function"])
        answers = bfcl.openai_answers(it["ground_truth"])
        calls = calls_from_answers(answers, tools)
        n_calls += len(calls)
        messages = it["question"][0]
        user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        rid = "req_" + hashlib.sha256(f"bfcl-v4:{it['id']}".encode()).hexdigest()[:20]
        wire = render_tool_calls([{**c, "id": "call_" + hashlib.sha256(f"{rid}:{j}".encode()).hexdigest()[:24]} for j, c in enumerate(calls)])
        rec = {
            "id": rid,
            "timestamp": (START + timedelta(seconds=t)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "model": MODEL,
            "messages": messages,
            "tools": tools,
            "response": {"role": "assistant", "content": None, "tool_calls": wire},
            "metadata": {"feature": FEATURE, "bfcl_id": it["id"], "bfcl_category": cat},
        }
        log_lines.append(json.dumps(rec, ensure_ascii=False))
        ref_lines.append(json.dumps({"id": rid, "user": user, "tools": [t["function"]["name"] for t in tools], "response": "", "tool_calls": calls,
                                     "possible_answer": answers, "category": cat}, ensure_ascii=False))
        seen_users.setdefault(user, []).append(it["id"])
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(("\n".join(log_lines) + "\n").encode("utf-8"))
    (out / "prompt_log.jsonl.gz").write_bytes(buf.getvalue())
    (out / "reference_answers.jsonl").write_text("\n".join(ref_lines) + "\n", encoding="utf-8")
    lic = _apache_text()
    if lic is not None:
        (out / "LICENSE").write_bytes(lic)
    dup = {u: ids for u, ids in seen_users.items() if len(ids) > 1}
    return {"records": len(log_lines), "calls": n_calls, "per_category": {c: sum(1 for cat, _ in items if cat == c) for c in categories},
            "duplicate_user_texts": len(dup), "license_written": lic is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = ap.parse_args()
    print(json.dumps(build(args.out)))


if __name__ == "__main__":
    main()
