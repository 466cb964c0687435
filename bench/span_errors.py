"""Bench: where a student's span (slot) answers go wrong, per slot name and by error type.

    python -P bench/span_errors.py --run <run dir with a trained encoder>   # scores its holdout
    python -P bench/span_errors.py --run ... --split train --field slots    # or another split / field

Predicts the run's holdout with its saved student (train/model) and compares each item's span
object (the teacher's `slots`: {name: text}) to the teacher's, value by value, with the metric's
own rule (eval/metrics.py span_field_metrics: strict string equality, case included). Each gold
(name, text) the student missed is one of: `boundary` (the student gave that name a different but
overlapping piece of the message: `short` inside the gold text, `long` containing it, `shifted`
otherwise), `case_or_space` (equal up to case / whitespace), `wrong_name` (the same or an
overlapping text under another name), `missed` (nothing there). Each predicted value that is not
gold and not already counted is `extra`. Also: the ceiling the tokenizer's offsets allow (gold
spans cut back out of the message through the tokens, as the tagger would cut them) and how many
gold values are ambiguous (the same text under several names in the data). Ends with ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.base import read_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402


def _norm(s: str) -> str:
    return " ".join(s.lower().split())


def _overlap(a: str, b: str, text: str) -> str | None:
    """How span text a relates to gold text b inside the message: short / long / shifted, or None."""
    if a in b:
        return "short"
    if b in a:
        return "long"
    ia, ib = text.find(a), text.find(b)
    if ia < 0 or ib < 0:
        return None
    return "shifted" if ia < ib + len(b) and ib < ia + len(a) else None


def breakdown(items: list[tuple[str, dict[str, str], dict[str, str]]]) -> dict[str, Any]:
    """items: (message, predicted {name: text}, gold {name: text}). Error counts overall and per name."""
    kinds: Counter = Counter()
    per: dict[str, Counter] = {}
    confusions: Counter = Counter()
    examples: dict[str, list[str]] = {}

    def note(kind: str, name: str, msg: str) -> None:
        kinds[kind] += 1
        per.setdefault(name, Counter())[kind] += 1
        if len(examples.setdefault(kind, [])) < 6:
            examples[kind].append(msg)

    for text, pred, gold in items:
        used: set[str] = set()  # predicted names already explained by a gold error
        for k, v in gold.items():
            p = pred.get(k)
            if p == v:
                note("correct", k, "")
                used.add(k)
                continue
            if p is not None and _norm(p) == _norm(v):
                note("case_or_space", k, f"{k}: {p!r} vs gold {v!r} | {text}")
                used.add(k)
                continue
            rel = _overlap(p, v, text) if p is not None else None
            if rel:
                note(f"boundary_{rel}", k, f"{k}: {p!r} vs gold {v!r} | {text}")
                used.add(k)
                continue
            other = next((k2 for k2, p2 in pred.items() if k2 != k and k2 not in gold and (p2 == v or _overlap(p2, v, text))), None)
            if other is not None:
                note("wrong_name", k, f"{k} -> {other}: {pred[other]!r} vs gold {v!r} | {text}")
                confusions[(k, other)] += 1
                used.add(other)
                if p is not None:  # the gold name also got some unrelated text
                    note("extra", k, f"{k}: {p!r} (gold {v!r}) | {text}")
                    used.add(k)
                continue
            note("missed", k, f"{k}: gold {v!r}, predicted {p!r} | {text}")
            if p is not None:
                used.add(k)
                note("extra", k, f"{k}: {p!r} (gold {v!r}) | {text}")
        for k2, p2 in pred.items():
            if k2 not in used and k2 not in gold:
                note("extra", k2, f"{k2}: {p2!r} | {text}")
            elif k2 not in used and gold.get(k2) != p2:
                note("extra", k2, f"{k2}: {p2!r} | {text}")
    tp = kinds["correct"]
    n_gold = sum(len(g) for _, _, g in items)
    n_pred = sum(len(p) for _, p, _ in items)
    micro = 2 * tp / (n_gold + n_pred) if (n_gold + n_pred) else None
    return {"gold": n_gold, "predicted": n_pred, "correct": tp, "micro_f1": round(micro, 4) if micro is not None else None,
            "errors": dict(kinds), "gold_errors": n_gold - tp, "per_name": {k: dict(v) for k, v in sorted(per.items())},
            "confusions": {f"{a}->{b}": n for (a, b), n in confusions.most_common()}, "examples": examples}


def offset_ceiling(student, items: list[tuple[str, dict[str, str]]]) -> dict[str, int]:
    """Gold spans cut back out of the message by the student's tokenizer offsets (as the tagger
    cuts its answers, whole_words as the student has it): how many come back character-exact."""
    from core.answer_shape import find_span
    from student.fields import align_span
    from student.span import span_text

    c: Counter = Counter()
    texts = [t for t, _ in items]
    _, offsets = student.encode_offsets(texts)
    for (text, gold), offs in zip(items, offsets):
        for v in gold.values():
            f = find_span(v, text)
            pos = align_span(offs, f[0], f[1]) if f else None
            if pos is None:
                c["not_alignable"] += 1
            elif span_text(text, offs, *pos, whole_words=student.span_whole_words) == v:
                c["exact"] += 1
            else:
                c["cut_differs"] += 1
    return dict(c)


def ambiguity(rows: list[dict], field: str) -> dict[str, Any]:
    """Gold texts (lower-cased) that appear under more than one name across all rows."""
    from eval.metrics import parse_output

    names: dict[str, Counter] = {}
    for r in rows:
        g = parse_output(r["response"])
        for k, v in ((g.get(field) or {}) if isinstance(g, dict) else {}).items():
            names.setdefault(_norm(str(v)), Counter())[k] += 1
    amb = {v: dict(c) for v, c in names.items() if len(c) > 1}
    return {"values_under_several_names": len(amb), "slot_occurrences_involved": sum(sum(c.values()) for c in amb.values()),
            "minority_name_occurrences": sum(sum(c.values()) - max(c.values()) for c in amb.values()),
            "slot_occurrences": sum(sum(c.values()) for c in names.values()), "top": dict(sorted(amb.items(), key=lambda kv: -sum(kv[1].values()))[:8])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path, help="a run dir whose train stage is done")
    ap.add_argument("--split", default="holdout", help="kept.jsonl split to score (holdout or train)")
    ap.add_argument("--field", default="slots", help="the teacher JSON's span object field")
    ap.add_argument("--examples", action="store_true", help="print up to 6 examples per error type")
    ap.add_argument("--served", action="store_true", help="load the student on the path its servers run (student.json's fast_path: onnx / int8), not plain PyTorch")
    args = ap.parse_args()

    from core.answer_shape import last_user_text
    from eval.metrics import exact_match, parse_output, structured_metrics
    from student import load_student

    rd = RunDir(args.run)
    rows = list(read_jsonl(rd.filter_kept))
    items = [r for r in rows if r.get("split", "train") == args.split]
    if args.served:
        from student.fast_path import load_served

        st = load_served(rd.model_dir)
    else:
        st = load_student(rd.model_dir)
    t0 = time.time()
    preds = st.predict([r["messages"] for r in items])
    predict_s = time.time() - t0
    teacher = [r["response"] for r in items]
    triples = []
    for r, p in zip(items, preds):
        g, q = parse_output(r["response"]), parse_output(p)
        triples.append((last_user_text(r["messages"]), (q.get(args.field) or {}) if isinstance(q, dict) else {}, g.get(args.field) or {}))
    b = breakdown(triples)
    sm = structured_metrics(preds, teacher)
    res = {"run": str(args.run), "split": args.split, "n": len(items), "exact_json": round(float(exact_match(preds, teacher).mean()), 4),
           "field_micro_f1": {f: round(m["micro_f1"], 4) for f, m in sm.items() if m.get("micro_f1") is not None},
           "breakdown": {k: v for k, v in b.items() if k != "examples"}, "offset_ceiling": offset_ceiling(st, [(t, g) for t, _, g in triples]),
           "ambiguity_all_rows": ambiguity(rows, args.field), "predict_s": round(predict_s, 1), "load_avg": os.getloadavg()}
    print(f"{args.split}: {len(items)} items, exact JSON {res['exact_json']}, micro-F1 {res['field_micro_f1']}")
    print(f"{args.field}: {b['gold']} gold, {b['predicted']} predicted, {b['correct']} right; errors {b['errors']}")
    for k, v in b["per_name"].items():
        print(f"  {k:>18}: {v}")
    print(f"confusions (gold -> predicted name): {b['confusions']}")
    print(f"offset ceiling: {res['offset_ceiling']}; ambiguity: {res['ambiguity_all_rows']}")
    if args.examples:
        for k, ex in b["examples"].items():
            print(f"-- {k}")
            for e in ex:
                if e:
                    print("   ", e)
    print(json.dumps({"bench": "span_errors", "results": res}))


if __name__ == "__main__":
    main()
