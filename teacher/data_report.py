"""The data report: what the filtered teacher data looks like, shown before any training.

It answers "is this worth fine-tuning?" honestly: how many examples survived and why the rest
did not, per-label balance, whether the outputs have one consistent format, length spread, how
often the teacher agrees with itself, whether there is enough data (fewer than 100 kept training
examples stops training unless --force), and whether the outputs look like recalled facts, for
which retrieval usually serves better than fine-tuning.
"""
from __future__ import annotations

import re
import statistics
from collections import Counter
from typing import Any

from core.answer_shape import answer_shape, encoder_fit, last_user_text, span_summary
from core.base import DistillError, read_jsonl, write_json
from core.toolcalls import tool_names
from core.rundir import RunDir
from teacher.filter_config import FilterConfig
from teacher.filters.base import approx_tokens, normalize_text, parse_json, reason_code, response_text
from teacher.filters.consistency import agreement
from teacher.filters.toolcall import tool_usage

# Thresholds of the retrieval hint: each signal is reported with its value so the hint can be judged.
HINT_MIN_MEAN_TOKENS = 20        # short outputs are labels/fields, not recalled passages
HINT_MIN_NOVEL_FACTS = 10.0      # names/numbers/dates per 100 output tokens not in the prompt (trivia ~30, support answers ~6-8)
HINT_MIN_DISTINCT = 0.8          # share of distinct outputs
HINT_SAMPLE = 1000               # records sampled for the fact density
HINT_MAX_REGULARITY = 0.5        # share of outputs sharing the dominant opening (a template)

_MONTHS = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*"
_CAP = re.compile(r"(?<![.!?:]\s)(?<!^)(?<!\n)\b[A-Z][\w'-]+")
_NUM_DATE = re.compile(rf"\b\d[\d,.:/-]*\b|\b{_MONTHS}\b", re.I)


class InsufficientDataError(DistillError):
    """Too few kept training examples to fine-tune; raised unless the user passes --force."""


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    s = sorted(values)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * (len(s) - 1) + 0.5))]

    return {"n": len(s), "min": s[0], "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": s[-1], "mean": round(statistics.fmean(s), 2)}


def _prompt_text(record: dict) -> str:
    return "\n".join(m.get("content") or "" for m in record.get("messages") or [] if isinstance(m, dict) and isinstance(m.get("content"), str))


def _fact_tokens(text: str) -> set[str]:
    """Names, numbers and dates: capitalised words not opening a sentence, digits, month names."""
    return {m.group(0).lower() for m in _CAP.finditer(text)} | {m.group(0).lower() for m in _NUM_DATE.finditer(text)}


def _format_summary(outputs: list[str]) -> dict[str, Any]:
    parsed = [parse_json(t) for t in outputs]
    objs = [v for ok, v in parsed if ok and isinstance(v, dict)]
    json_share = sum(ok for ok, _ in parsed) / len(outputs) if outputs else 0.0
    keysets = Counter(tuple(sorted(o)) for o in objs)
    top_keys, top_n = keysets.most_common(1)[0] if keysets else ((), 0)
    return {
        "json_share": round(json_share, 4),
        "object_share": round(len(objs) / len(outputs), 4) if outputs else 0.0,
        "distinct_key_sets": len(keysets),
        "dominant_keys": list(top_keys),
        "dominant_keys_share": round(top_n / len(outputs), 4) if outputs else 0.0,
        "kind": "json" if json_share >= 0.8 else "text",
    }


def _labels(outputs: list[str], fmt: dict) -> tuple[str | None, Counter]:
    """The label field of structured outputs (a low-cardinality string), or short texts as labels."""
    n = len(outputs)
    if not n:
        return None, Counter()
    if fmt["kind"] == "json" and fmt["dominant_keys"]:
        objs = [v for ok, v in (parse_json(t) for t in outputs) if ok and isinstance(v, dict)]
        best = None
        for k in fmt["dominant_keys"]:
            c = Counter(o[k] for o in objs if isinstance(o.get(k), str))
            if c and len(c) <= 200 and len(c) <= max(2, 0.5 * n) and (best is None or sum(c.values()) > sum(best[1].values())):
                best = (k, c)
        return best if best else (None, Counter())
    texts = Counter(o.strip() for o in outputs)
    if len(texts) <= 200 and len(texts) <= max(2, 0.5 * n) and statistics.fmean(approx_tokens(t) for t in outputs) <= 6:
        return "(output)", texts
    return None, Counter()


def _retrieval_hint(train: list[dict], fmt: dict, label_field: str | None) -> dict[str, Any]:
    outputs = [response_text(r) for r in train]
    if not outputs:
        return {"hint": False, "signals": {}, "message": "no kept training outputs"}
    toks = [approx_tokens(t) for t in outputs]
    novel = []
    # A sample is plenty for a mean, and the regexes over long system prompts are the slow part.
    step = max(1, len(train) // HINT_SAMPLE)
    for r, t, n in list(zip(train, outputs, toks))[::step]:
        prompt_words = {w.lower() for w in re.findall(r"\w+", _prompt_text(r))}
        facts = {f for f in _fact_tokens(t) if f not in prompt_words}
        novel.append(100.0 * len(facts) / max(n, 1))
    # Format regularity: JSON outputs sharing the dominant key set, or texts sharing an opening.
    if fmt["kind"] == "json":
        regularity = fmt["dominant_keys_share"]
    else:
        openings = Counter(" ".join(normalize_text(t).split()[:3]) for t in outputs)
        regularity = openings.most_common(1)[0][1] / len(outputs)
    signals = {
        "free_text": {"value": fmt["kind"] == "text" and label_field is None, "threshold": True},
        "mean_output_tokens": {"value": round(statistics.fmean(toks), 1), "threshold": HINT_MIN_MEAN_TOKENS},
        "novel_facts_per_100_tokens": {"value": round(statistics.fmean(novel), 2), "threshold": HINT_MIN_NOVEL_FACTS},
        "distinct_output_share": {"value": round(len({normalize_text(t) for t in outputs}) / len(outputs), 3), "threshold": HINT_MIN_DISTINCT},
        "format_regularity": {"value": round(regularity, 3), "threshold": HINT_MAX_REGULARITY},
    }
    hit = {
        "free_text": signals["free_text"]["value"],
        "mean_output_tokens": signals["mean_output_tokens"]["value"] >= HINT_MIN_MEAN_TOKENS,
        "novel_facts_per_100_tokens": signals["novel_facts_per_100_tokens"]["value"] >= HINT_MIN_NOVEL_FACTS,
        "distinct_output_share": signals["distinct_output_share"]["value"] >= HINT_MIN_DISTINCT,
        "format_regularity": signals["format_regularity"]["value"] <= HINT_MAX_REGULARITY,
    }
    for k in signals:
        signals[k]["met"] = bool(hit[k])
    hint = all(hit.values())
    msg = (
        "The kept outputs look like recalled facts (long, varied free text full of names, numbers and dates "
        "that are not in the prompts) rather than a behaviour or a format. A small student will not reliably "
        "memorise facts; retrieval over a document store (RAG) with a small model, or keeping the teacher, may "
        "serve better than fine-tuning."
        if hint else "Outputs look like a behaviour or format a student can learn (not recalled facts)."
    )
    return {"hint": hint, "signals": signals, "message": msg}


def _self_agreement(records: list[dict], fields: list[str] | None) -> dict[str, Any] | None:
    shares = [a[0] for a in (agreement(r, fields) for r in records) if a is not None]
    if not shares:
        return None
    return {
        "prompts_with_samples": len(shares),
        "mean_agreement": round(statistics.fmean(shares), 4),
        "unanimous_share": round(sum(s == 1.0 for s in shares) / len(shares), 4),
        "below_half_share": round(sum(s < 0.5 for s in shares) / len(shares), 4),
    }


def _tags(rd: RunDir, kept: list[dict]) -> Counter:
    """metadata.tags (or metadata.tag) of kept train records; replay records may not carry
    metadata, so it is looked up in the ingest output by id."""
    meta = {r.get("id"): r.get("metadata") for r in kept if isinstance(r.get("metadata"), dict)}
    ingest = rd.ingest_train
    if len(meta) < len(kept) and ingest.is_file():
        for r in read_jsonl(ingest):
            if isinstance(r.get("metadata"), dict):
                meta.setdefault(r.get("id"), r["metadata"])
    c: Counter = Counter()
    for r in kept:
        m = meta.get(r.get("id")) or {}
        tags = m.get("tags", m.get("tag"))
        for t in tags if isinstance(tags, list) else [tags] if isinstance(tags, str) else []:
            c[str(t)] += 1
    return c


def _answer_shape(train: list[dict], outputs: list[str]) -> dict[str, Any]:
    """Which student the answers' shape calls for (student kind auto decides the same way, with the
    classifier's default label limits): per field categorical / set / span / free, and the field
    that sends it to the causal LM, if any."""
    shape = answer_shape(outputs, [last_user_text(r.get("messages") or []) for r in train])
    fit = encoder_fit(shape)
    student = "encoder" if fit["encoder"] else "causal_lm"
    line = (f"answer shape -> {student} student: " + ", ".join(f"{k} {v}" for k, v in fit["types"].items())
            + (f"; decided by field {fit['decided_by']!r}: {fit['reason']}" if fit["decided_by"] else ""))
    return {"student": student, "decided_by": fit["decided_by"], "reason": fit["reason"], "types": fit["types"],
            "spans": span_summary(shape), "line": line}


def _tool_calls(answered: list[dict], train: list[dict]) -> dict[str, Any]:
    """Calls per tool and text-instead-of-call answers: by the teacher (every answer it gave,
    kept or filtered) and in the kept training data."""
    teacher, kept = tool_usage(answered), tool_usage(train)
    names = list(dict.fromkeys([*teacher["calls_per_tool"], *kept["calls_per_tool"], *tool_names_of(answered)]))
    per_tool = [{"tool": n, "teacher_calls": teacher["calls_per_tool"].get(n, 0), "kept_train_calls": kept["calls_per_tool"].get(n, 0)}
                for n in names]
    return {"teacher": teacher, "kept_train": kept, "per_tool": per_tool, "tools_declared": len(names)}


def tool_names_of(records: list[dict]) -> list[str]:
    """Every declared tool, in first-seen order (a tool never called still shows, with 0)."""
    seen: dict[str, None] = {}
    for r in records:
        for n in tool_names(r.get("tools")):
            seen.setdefault(n, None)
    return list(seen)


def _sufficiency(n_train: int, cfg: FilterConfig) -> dict[str, Any]:
    lo, warn = cfg.report.min_train_examples, cfg.report.warn_train_examples
    if n_train < lo:
        status = "insufficient"
        msg = f"only {n_train} kept training examples (minimum {lo}, filter.report.min_train_examples): training stops unless run with --force"
    elif n_train < warn:
        status = "warn"
        msg = f"{n_train} kept training examples is few (under {warn}): expect a weak student; log more prompts if you can"
    else:
        status, msg = "ok", f"{n_train} kept training examples"
    return {"kept_train": n_train, "min": lo, "warn_below": warn, "status": status, "message": msg}


def build_data_report(rd: RunDir, cfg: FilterConfig, stats: list[dict] | None = None, write: bool = True) -> dict:
    """Build the report from rd/filter/{kept,dropped}.jsonl; write data_report.json/.md there."""
    kept_p, dropped_p = rd.filter_kept, rd.filter_dropped
    if not kept_p.is_file():
        raise DistillError(f"data report: {kept_p} not found; run the filter stage first")
    kept = list(read_jsonl(kept_p))
    dropped = list(read_jsonl(dropped_p)) if dropped_p.is_file() else []
    if stats is None:
        stats = rd.stage("filter").get("figures", {}).get("filters", [])
    train = [r for r in kept if r.get("split", "train") == "train"]
    # Answers that call tools have no text shape: format, labels and answer shape describe the
    # text answers; the calls have their own section.
    text_train = [r for r in train if not r.get("tool_calls")]
    outputs = [response_text(r) for r in text_train]
    fmt = _format_summary(outputs)
    label_field, labels = _labels(outputs, fmt)
    answered = kept + [d for d in dropped if d.get("dropped_by") != "replay"]
    thin = sorted(k for k, v in labels.items() if v < cfg.report.min_per_label)

    report: dict[str, Any] = {
        "run_id": rd.run_id,
        "counts": {
            "replayed": len(kept) + len(dropped),
            "kept": len(kept),
            "dropped": len(dropped),
            "kept_train": len(train),
            "kept_holdout": len(kept) - len(train),
            "dropped_by_filter": dict(Counter(d.get("dropped_by") for d in dropped)),
            "dropped_by_reason": dict(Counter(reason_code(d.get("reason", "")) for d in dropped)),
        },
        "filters": stats,
        "drop_examples": {k: [{"id": d.get("id"), "reason": d.get("reason"), "response": (response_text(d) or "")[:200]}
                              for d in dropped if d.get("dropped_by") == k][:3] for k in sorted({d.get("dropped_by") for d in dropped})},
        "format": fmt,
        "labels": {"field": label_field, "distinct": len(labels), "counts": dict(labels.most_common()), "thin": thin},
        "tags": dict(_tags(rd, train).most_common()),
        "lengths": {
            "output_tokens": _dist([float(r.get("completion_tokens") or approx_tokens(response_text(r))) for r in train]),
            "prompt_tokens": _dist([float(r.get("prompt_tokens") or approx_tokens(_prompt_text(r))) for r in train]),
        },
        "self_agreement": _self_agreement(answered, cfg.consistency.fields),
        "sufficiency": _sufficiency(len(train), cfg),
        "retrieval_hint": _retrieval_hint(text_train, fmt, label_field),
        "answer_shape": _answer_shape(text_train, outputs),
    }
    answered_ok = [r for r in answered if r.get("status", "ok") == "ok"]
    if any(r.get("tools") or r.get("tool_calls") for r in answered_ok):
        report["tool_calls"] = _tool_calls(answered_ok, train)
    warnings = []
    if report["sufficiency"]["status"] != "ok":
        warnings.append(report["sufficiency"]["message"])
    if thin:
        warnings.append(f"{len(thin)} label(s) have fewer than {cfg.report.min_per_label} kept training examples: {', '.join(map(str, thin[:10]))}{' ...' if len(thin) > 10 else ''}")
    if fmt["kind"] == "json" and fmt["dominant_keys_share"] < 0.95:
        warnings.append(f"only {fmt['dominant_keys_share']:.0%} of kept outputs share the key set {fmt['dominant_keys']}")
    sa = report["self_agreement"]
    if sa and sa["mean_agreement"] < 0.8:
        warnings.append(f"the teacher agrees with itself on {sa['mean_agreement']:.0%} of samples on average: labels are noisy")
    if report["counts"]["replayed"] and len(dropped) / report["counts"]["replayed"] > 0.3:
        warnings.append(f"{len(dropped)} of {report['counts']['replayed']} replayed records were dropped; see dropped_by_reason")
    if report["retrieval_hint"]["hint"]:
        warnings.append(report["retrieval_hint"]["message"])
    sp = report["answer_shape"]["spans"]
    if sp["fuzzy_matches"] or sp["not_in_input"]:
        warnings.append(f"span fields: {sp['fuzzy_matches']} value(s) match the user's message only up to case/spacing (the student "
                        f"copies the message's own text), {sp['not_in_input']} are not in the message at all (not learned as spans)")
    tcs = report.get("tool_calls")
    if tcs and tcs["teacher"]["text_answer_share"] and tcs["teacher"]["text_answer_share"] > 0.5:
        warnings.append(f"the teacher answered {tcs['teacher']['text_answers']} of {tcs['teacher']['requests_with_tools']} requests "
                        "with tools in text instead of a call")
    report["warnings"] = warnings
    if write:
        write_json(rd.data_report, report)
        tmp = rd.data_report_md.with_name(".data_report.md.tmp")
        tmp.write_text(data_report_markdown(report), encoding="utf-8")
        tmp.replace(rd.data_report_md)
    return report


def check_sufficiency(report: dict, force: bool = False) -> list[str]:
    """Call before training. Raises InsufficientDataError when there are too few kept training
    examples and `force` is False; otherwise returns the report's warnings (to print)."""
    s = report.get("sufficiency") or {}
    if s.get("status") == "insufficient" and not force:
        raise InsufficientDataError(
            f"only {s.get('kept_train')} kept training examples after filtering (minimum {s.get('min')}, "
            f"filter.report.min_train_examples); training stopped. Log more prompts, loosen the filters "
            f"(see dropped_by_reason in filter/data_report.md), or pass --force to train anyway."
        )
    return list(report.get("warnings") or [])


def _table(rows: list[tuple], head: tuple) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return out


def data_report_markdown(report: dict) -> str:
    c = report["counts"]
    s = report["sufficiency"]
    md = [f"# Data report ({report.get('run_id', '')})", ""]
    icon = {"ok": "OK", "warn": "WARNING", "insufficient": "STOP"}[s["status"]]
    md += [f"**Sufficiency: {icon}**: {s['message']}", ""]
    if report["retrieval_hint"]["hint"]:
        md += [f"> **Hint: retrieval may serve better than fine-tuning.** {report['retrieval_hint']['message']}", ""]
    if report.get("warnings"):
        md += ["## Warnings", ""] + [f"- {w}" for w in report["warnings"]] + [""]
    md += ["## Counts", "", f"Replayed {c['replayed']} = kept {c['kept']} (train {c['kept_train']}, holdout {c['kept_holdout']}) + dropped {c['dropped']}.", ""]
    if report.get("filters"):
        md += _table([(f["name"], "yes" if f.get("active") else "no", f.get("seen"), f.get("kept"), f.get("dropped"), f.get("note", "")) for f in report["filters"]],
                     ("filter", "active", "seen", "kept", "dropped", "note")) + [""]
    if c["dropped_by_reason"]:
        md += _table(sorted(c["dropped_by_reason"].items(), key=lambda kv: -kv[1]), ("drop reason", "records")) + [""]
    for name, ex in report.get("drop_examples", {}).items():
        md += [f"Examples dropped by **{name}**:"] + [f"- `{e['id']}`: {e['reason'][:160]}" for e in ex] + [""]
    tcs = report.get("tool_calls")
    if tcs:
        t, k = tcs["teacher"], tcs["kept_train"]
        share = f" ({t['text_answer_share']:.0%})" if t["text_answer_share"] is not None else ""
        md += ["## Tool calls", "",
               f"The teacher answered {t['requests_with_tools']} requests with tools: {t['text_answers']} in text instead of a call{share}, "
               f"{t['parallel_call_answers']} with parallel calls. Kept for training: {k['requests_with_tools'] - k['text_answers']} "
               f"answers with calls, {k['text_answers']} in text.", ""]
        rows = [(x["tool"], x["teacher_calls"], x["kept_train_calls"]) for x in tcs["per_tool"]]
        md += _table(rows if len(rows) <= 40 else rows[:30] + [(f"... {len(rows) - 30} more", "", "")], ("tool", "teacher calls", "kept train calls")) + [""]
    f = report["format"]
    if tcs and not tcs["kept_train"]["text_answers"] and len(tcs["kept_train"]["calls_per_tool"]) and c["kept_train"] == tcs["kept_train"]["requests_with_tools"]:
        md += ["## Output format", "", "Every kept training answer is a tool call (see Tool calls): no text format to check.", ""]
    else:
        md += ["## Output format", "", f"Kind: {f['kind']}; JSON: {f['json_share']:.0%}; distinct key sets: {f['distinct_key_sets']}"
               + (f"; dominant keys {f['dominant_keys']} in {f['dominant_keys_share']:.0%}" if f["dominant_keys"] else "")
               + (" (text answers only; the calls are under Tool calls)" if tcs else ""), ""]
        if report.get("answer_shape"):
            md += [report["answer_shape"]["line"], ""]
    lab = report["labels"]
    if lab["field"]:
        md += [f"## Labels (`{lab['field']}`, {lab['distinct']} distinct)", ""]
        items = list(lab["counts"].items())
        # Most and least common: imbalance shows at both ends, the middle adds little.
        rows = items if len(items) <= 30 else items[:15] + [(f"... {len(items) - 25} more", sum(v for _, v in items[15:-10]))] + items[-10:]
        md += _table(rows, ("label", "kept train")) + [""]
        if lab["thin"]:
            md += [f"Thin labels: {', '.join(map(str, lab['thin'][:30]))}", ""]
    if report.get("tags"):
        md += ["## Tags", ""] + _table(list(report["tags"].items())[:30], ("tag", "kept train")) + [""]
    md += ["## Lengths (tokens)", ""]
    md += _table([(k, *(v.get(q, "") for q in ("n", "min", "p50", "p90", "p99", "max", "mean"))) for k, v in report["lengths"].items()],
                 ("", "n", "min", "p50", "p90", "p99", "max", "mean")) + [""]
    sa = report.get("self_agreement")
    md += ["## Teacher self-agreement", ""]
    md += [f"{sa['prompts_with_samples']} prompts with samples: mean agreement {sa['mean_agreement']:.0%}, unanimous {sa['unanimous_share']:.0%}, below half {sa['below_half_share']:.0%}.", ""] if sa else ["No multi-sample replay (n = 1): not measured.", ""]
    md += ["## Fine-tuning vs retrieval", "", report["retrieval_hint"]["message"], ""]
    sig = report["retrieval_hint"].get("signals") or {}
    if sig:
        md += _table([(k, v["value"], v["threshold"], "yes" if v["met"] else "no") for k, v in sig.items()], ("signal", "value", "threshold", "points to retrieval")) + [""]
    return "\n".join(md)
