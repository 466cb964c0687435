"""Build the NLU++ (banking) example prompt log from the PolyAI NLU++ annotations.

    python examples/nluplusplus/build_log.py [--src ../shared/data/nlupp]

Writes, beside this script:
    prompt_log.jsonl.gz       {"id","timestamp","model","messages":[system,user],"response":{"role","content"},"metadata"}
    reference_answers.jsonl   {"id","user","response"}  (the gold answers, for eval)
    output_schema.json        JSON Schema of the answer

The "teacher" answers are the human annotations rendered as JSON
{"intents": [sorted...], "slots": {slot: text}} with slots in ontology order, so the same input
always yields byte-identical output (exact-match agreement is then meaningful). Deterministic:
rerunning produces identical files. The log is gzipped (like examples/banking77) because every
record repeats the ~1 KB system prompt; ingest reads .gz transparently.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOMAINS = {"general", "banking"}
MODEL = "nlupp-annotations"


def load_ontology(src: Path) -> tuple[list[str], list[str]]:
    onto = json.loads((src / "ontology.json").read_text())
    intents = sorted(k for k, v in onto["intents"].items() if DOMAINS & set(v["domain"]))
    slots = [k for k, v in onto["slots"].items() if DOMAINS & set(v["domain"])]  # ontology order
    return intents, slots


def system_prompt(intents: list[str], slots: list[str]) -> str:
    # Compact on purpose: it is repeated in every record; names only, no descriptions.
    return (
        "You are the NLU component of a bank's virtual assistant. Read the customer's message and "
        "answer with JSON only: {\"intents\": [...], \"slots\": {...}}. \"intents\" lists every "
        "intent that applies (zero or more), sorted alphabetically, chosen from: "
        + ", ".join(intents)
        + ". \"slots\" maps each slot mentioned in the message to its exact text span, in this "
        "order, omitting absent ones: " + ", ".join(slots) + "."
    )


def answer(example: dict, slot_order: list[str]) -> str:
    found = example.get("slots") or {}
    unknown = set(found) - set(slot_order)
    if unknown:
        raise ValueError(f"slot(s) {sorted(unknown)} not in the banking ontology: {example['text']!r}")
    slots = {name: found[name]["text"] for name in slot_order if name in found}
    return json.dumps({"intents": sorted(set(example.get("intents") or [])), "slots": slots}, ensure_ascii=False)


def output_schema(intents: list[str], slots: list[str]) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "NLU++ banking annotation",
        "type": "object",
        "additionalProperties": False,
        "required": ["intents", "slots"],
        "properties": {
            "intents": {"type": "array", "uniqueItems": True, "items": {"enum": intents}},
            "slots": {
                "type": "object",
                "additionalProperties": False,
                "properties": {s: {"type": "string", "minLength": 1} for s in slots},
            },
        },
    }


def build(src: Path, out: Path) -> int:
    intents, slots = load_ontology(src)
    system = system_prompt(intents, slots)
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    log, refs = [], []
    folds = sorted((src / "banking").glob("fold*.json"), key=lambda p: int(p.stem[4:]))
    for fold in folds:
        for i, ex in enumerate(json.loads(fold.read_text())):
            rid = f"nlupp-banking-{fold.stem}-{i:03d}"
            resp = answer(ex, slots)
            log.append({
                "id": rid,
                "timestamp": (t0 + timedelta(minutes=7 * len(log))).isoformat().replace("+00:00", "Z"),
                "model": MODEL,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": ex["text"]}],
                "response": {"role": "assistant", "content": resp},
                "metadata": {"source": "nlupp", "domain": "banking", "fold": int(fold.stem[4:])},
            })
            refs.append({"id": rid, "user": ex["text"], "response": resp})
    # mtime=0 so rebuilding gives a byte-identical archive
    with open(out / "prompt_log.jsonl.gz", "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in log).encode("utf-8"))
    _write_jsonl(out / "reference_answers.jsonl", refs)
    (out / "output_schema.json").write_text(json.dumps(output_schema(intents, slots), indent=2) + "\n")
    return len(log)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=Path(os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "nlupp", help="NLU++ data directory")
    ap.add_argument("--out", type=Path, default=HERE, help="output directory")
    a = ap.parse_args()
    print(f"wrote {build(a.src, a.out)} records to {a.out}")
