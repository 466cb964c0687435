"""Build the Banking77 demo prompt log: what a production intent router would have logged.

Turns the Banking77 training set (10,003 customer queries, 77 intents, CC BY 4.0) into:

    prompt_log.jsonl.gz       OpenAI chat-format request log, one request per line, in time order
    reference_answers.jsonl   {"id", "user", "response"} with the dataset's human (gold) labels
    output_schema.json        JSON Schema of the answer: {"intent": <one of the 77 labels>}

The log is gzipped because every record carries the full system prompt (~2 KB listing the 77
labels): plain, it would be ~20 MB; ingest reads .gz transparently.

The recorded production responses agree with the gold label except for a seeded ~4 % of
requests, where the "production model" picked another label - real logs contain teacher
mistakes, and the reference answers are what a better teacher would say.

Deterministic: same inputs -> byte-identical outputs.  Run: python examples/banking77/build_log.py
"""
from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The shared data directory beside the checkout (../shared/data), or $DISTILL_SHARED_DATA.
DEFAULT_SRC = Path(os.environ.get("DISTILL_SHARED_DATA", HERE.parents[2] / "shared" / "data")) / "banking77"
SEED = 77
START = datetime(2026, 10, 1, tzinfo=timezone.utc)
DAYS = 30
MODEL = "gpt-4o-2024-08-06"
FEATURE = "support-intent-router"
WRONG_RATE = 0.04

CHANNELS = [("ios", 0.45), ("android", 0.35), ("web", 0.20)]
LOCALES = [("en-GB", 0.6), ("en-IE", 0.15), ("en-US", 0.15), ("en-AU", 0.10)]
APP_VERSIONS = ["5.2.0", "5.2.1", "5.3.0"]  # a release lands every ~10 days


def system_prompt(labels: list[str]) -> str:
    return (
        "You are the intent router for a digital bank's customer-support chat. "
        "Classify the customer's message into exactly one intent from this list:\n"
        + ", ".join(labels)
        + '\n\nAnswer ONLY with a JSON object of the form {"intent": "<label>"} using one label '
        "from the list verbatim. No explanations, no markdown."
    )


def read_rows(src: Path) -> list[tuple[str, str]]:
    # csv module, not line splitting: a few texts contain quoted newlines.
    with open(src / "train.csv", newline="", encoding="utf-8") as f:
        return [(r["text"], r["category"]) for r in csv.DictReader(f)]


def _pick(rng: random.Random, weighted: list[tuple[str, float]]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _answer(label: str) -> str:
    return json.dumps({"intent": label})


def build(src: Path, out: Path) -> dict:
    labels = json.loads((src / "categories.json").read_text())
    rows = read_rows(src)
    label_set = set(labels)
    bad = [i for i, (_, c) in enumerate(rows) if c not in label_set]
    if bad:
        raise SystemExit(f"train.csv rows {bad[:5]} have categories missing from categories.json")
    rng = random.Random(SEED)
    order = list(range(len(rows)))
    rng.shuffle(order)  # the CSV is sorted by intent; production traffic is not
    # Increasing timestamps with random gaps, scaled to fill DAYS (arrivals ~ Poisson).
    gaps = [rng.expovariate(1.0) for _ in order]
    scale = DAYS * 86400 / sum(gaps)
    sys_msg = {"role": "system", "content": system_prompt(labels)}
    log_lines, ref_lines = [], []
    t = 0.0
    wrong = 0
    for n, i in enumerate(order):
        text, gold = rows[i]
        t += gaps[n] * scale
        ts = START + timedelta(seconds=t)
        rid = "req_" + hashlib.sha256(f"banking77-train:{i}:{text}".encode()).hexdigest()[:20]
        answer = gold
        if rng.random() < WRONG_RATE:
            answer = rng.choice([l for l in labels if l != gold])
            wrong += 1
        prompt_tokens = (len(sys_msg["content"]) + len(text)) // 4 + 11
        rec = {
            "id": rid,
            "timestamp": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "model": MODEL,
            "messages": [sys_msg, {"role": "user", "content": text}],
            "response": {"role": "assistant", "content": _answer(answer)},
            "metadata": {
                "feature": FEATURE,
                "channel": _pick(rng, CHANNELS),
                "locale": _pick(rng, LOCALES),
                "app_version": APP_VERSIONS[min(int(t // (10 * 86400)), len(APP_VERSIONS) - 1)],
                "session_id": "sess_" + hashlib.sha256(f"s{SEED}:{n // 3}".encode()).hexdigest()[:12],
                "latency_ms": round(rng.lognormvariate(6.3, 0.35), 1),
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 9},
            },
        }
        log_lines.append(json.dumps(rec, ensure_ascii=False))
        ref_lines.append(json.dumps({"id": rid, "user": text, "response": _answer(gold)}, ensure_ascii=False))
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    # mtime=0 and no filename keep the gzip bytes identical across rebuilds.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(("\n".join(log_lines) + "\n").encode("utf-8"))
    (out / "prompt_log.jsonl.gz").write_bytes(buf.getvalue())
    (out / "reference_answers.jsonl").write_text("\n".join(ref_lines) + "\n", encoding="utf-8")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Banking77 intent",
        "type": "object",
        "properties": {"intent": {"type": "string", "enum": labels}},
        "required": ["intent"],
        "additionalProperties": False,
    }
    (out / "output_schema.json").write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    lic = src / "LICENSE"
    if lic.exists():
        (out / "LICENSE").write_bytes(lic.read_bytes())
    return {"records": len(log_lines), "labels": len(labels), "recorded_wrong": wrong}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC, help="directory with train.csv, categories.json, LICENSE")
    ap.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = ap.parse_args()
    print(json.dumps(build(args.src, args.out)))


if __name__ == "__main__":
    main()
