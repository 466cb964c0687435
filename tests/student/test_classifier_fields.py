"""Set and span fields of the classifier student (student/fields.py, structured.py, span.py,
labelset.py) on a tiny BERT built in-test: multi-label intents + slot spans, NLU++-shaped."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from core.answer_shape import answer_shape, encoder_fit, find_span  # noqa: E402
from core.base import write_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402
from student import load_student  # noqa: E402
from student.base import Example  # noqa: E402
from student.config import AutoStudentConfig  # noqa: E402
from student.fields import Layout, align_span  # noqa: E402
from student.models import make_tiny_encoder  # noqa: E402
from student.span import BIAS_GRID, I_BIAS_GRID  # noqa: E402
from student.train import choose_kind, kind_decision, run_train  # noqa: E402

INTENTS = {"transfer": ["send", "transfer"], "card": ["card"], "cancel": ["cancel", "stop"], "balance": ["balance"]}
NAMES = ["alice", "bob", "carol", "dave"]
AMOUNTS = ["five pounds", "ten pounds", "twenty pounds"]
DATES = ["next week", "tomorrow", "on monday"]
FILLER = ["please", "my", "the", "now", "i", "want", "to"]


def make_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        intents = sorted(rng.sample(sorted(INTENTS), rng.choice([1, 1, 2])))
        words = [rng.choice(FILLER)] + [rng.choice(INTENTS[t]) for t in intents]
        slots = {}
        for name, pool in (("date", DATES), ("person", NAMES), ("amount", AMOUNTS)):
            if rng.random() < 0.5:
                slots[name] = rng.choice(pool)
        # Slot values in the message in a shuffled order; the answer keeps the schema's order.
        parts = list(slots.values()) + [rng.choice(FILLER)]
        rng.shuffle(parts)
        text = " ".join(words + parts)
        out = json.dumps({"intents": intents, "slots": slots})
        rows.append({"id": f"r{seed}-{i}", "split": "train", "status": "ok", "response": out,
                     "messages": [{"role": "system", "content": "Extract intents and slots."}, {"role": "user", "content": text}]})
    return rows


def corpus() -> list[str]:
    return [" ".join(w for ws in INTENTS.values() for w in ws), " ".join(NAMES), " ".join(AMOUNTS), " ".join(DATES), " ".join(FILLER)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny") / "enc", corpus(), hidden=48, heads=4)


def cfg(model: Path, **kw) -> AutoStudentConfig:
    opts = dict(head_learning_rate=3e-2, train_layers=1, encoder_dropout=None, knn=False, linear_probe_init=True)
    opts.update(kw.pop("classifier", {}))
    base = dict(base_model=str(model), epochs=12, batch_size=16, learning_rate=2e-2, num_threads=1, checkpoint_every_steps=1000,
                early_stopping_patience=0, lora={"r": 8, "alpha": 16, "dropout": 0.0})
    base.update(kw)
    return AutoStudentConfig(**base, classifier=opts)


def make_run(tmp_path: Path, rows: list[dict]) -> RunDir:
    rd = RunDir.create(tmp_path / "runs", "t")
    write_jsonl(rd.path / "filter" / "kept.jsonl", rows)
    return rd


def examples(rows: list[dict]) -> list[Example]:
    return [Example(r["id"], r["messages"], r["response"]) for r in rows]


def test_layout_detects_set_and_spans_and_rendering_round_trips():
    rows = make_records(300)
    outs, users = [r["response"] for r in rows], [r["messages"][-1]["content"] for r in rows]
    layout, fit = Layout.detect(outs, users, 500, 2.0)
    assert fit["encoder"] and fit["types"] == {"intents": "set", "slots.date": "span", "slots.person": "span", "slots.amount": "span"}
    for out, user in zip(outs, users):
        t = layout.targets_of(out, user)
        values = {k: (user[v[0]:v[1]] if isinstance(v, tuple) else v) for k, v in t.items()}
        assert layout.render(values) == out  # key order, sorted intents, omitted slots, spacing
    # A style other than json.dumps' default comes back too.
    compact = [json.dumps(json.loads(o), separators=(",", ":")) for o in outs]
    layout2, _ = Layout.detect(compact, users, 500, 2.0)
    t = layout2.targets_of(compact[0], users[0])
    assert layout2.render({k: (users[0][v[0]:v[1]] if isinstance(v, tuple) else v) for k, v in t.items()}) == compact[0]


def test_free_text_field_makes_auto_choose_the_causal_lm_and_names_it():
    rows = make_records(60)
    for n, r in enumerate(rows):
        obj = json.loads(r["response"])
        obj["note"] = f"a summary the user never wrote, number {n}"
        r["response"] = json.dumps(obj)
    d = kind_decision(cfg(Path("unused")), examples(rows))
    assert d["kind"] == "causal_lm" and d["decided_by"] == "note" and "free text" in d["reason"]


def test_fuzzy_and_missing_spans_are_matched_or_reported():
    assert find_span("Next  Week", "pay bob next week please") == (8, 17, "fuzzy")
    assert find_span("bob", "pay bob") == (4, 7, "exact") and find_span("carl", "pay bob") is None
    # Mostly copied spans, a few with other casing/spacing: still a span field, the fuzzy ones counted.
    outs = [json.dumps({"intents": ["x"], "slots": {"date": "Next  Week" if i % 10 == 0 else f"day {i}"}}) for i in range(40)]
    users = ["pay next week" if i % 10 == 0 else f"pay on day {i}" for i in range(40)]
    leaf = next(lf for lf in answer_shape(outs, users)["leaves"] if lf["name"] == "slots.date")
    assert leaf["type"] == "span" and leaf["fuzzy"] == 4 and leaf["not_in_input"] == 0
    # Values the input does not hold (an invented date): reported, and the field decides the kind.
    users = ["pay next week" if i % 10 == 0 else f"pay on day {i + 1}" for i in range(40)]
    shape = answer_shape(outs, users)
    leaf = next(lf for lf in shape["leaves"] if lf["name"] == "slots.date")
    assert leaf["type"] == "free" and leaf["not_in_input"] == 36 and leaf["fuzzy"] == 4
    assert encoder_fit(shape)["decided_by"] == "slots.date"
    # Offsets -> tokens: characters [4, 13) of "pay next week" are tokens 2..3 ([CLS] is 0).
    assert align_span([(0, 0), (0, 3), (4, 8), (9, 13), (0, 0)], 4, 13) == (2, 3)
    assert align_span([(0, 0), (0, 3), (0, 0)], 4, 13) is None  # cut by truncation


@pytest.mark.parametrize("span_tags", ["factored", "per_name"])
def test_set_and_span_fields_learn_save_load_and_never_invent_text(tmp_path, tiny_model, span_tags):
    rows = make_records(360)
    # Hostile teacher: one span copied with other casing/spacing, one not in the input at all.
    rows[0]["messages"][-1]["content"] = "send bob next week"
    rows[0]["response"] = json.dumps({"intents": ["transfer"], "slots": {"date": "Next  Week", "person": "bob"}})
    rows[1]["messages"][-1]["content"] = "send bob"
    rows[1]["response"] = json.dumps({"intents": ["transfer"], "slots": {"person": "robert"}})
    rd = make_run(tmp_path, rows)
    c = cfg(tiny_model, classifier={"span_tags": span_tags})
    assert choose_kind(c, examples(rows)) == "classifier"
    m = run_train(c, rd)
    assert m["kind"] == "classifier" and m["kind_decision"]["types"]["intents"] == "set"
    losses = m["train_losses"]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, (losses[:5], losses[-5:])
    assert m["val_accuracy"] >= 0.8, m["val_history"]
    align = m["finalize"]["structured"]["span_alignment"]
    assert align["fuzzy"] == 1 and align["not_in_input"] == 1  # reported, never silently dropped

    st = load_student(rd.path / "train" / "model")
    batch = [r["messages"] for r in rows[2:62]]
    preds = st.predict(batch)
    assert sum(p == r["response"] for p, r in zip(preds, rows[2:62])) >= 50  # memorised: exact text back
    scored = st.predict_scored(batch)
    assert [t for t, _ in scored] == preds and all(0 < c <= 1 for _, c in scored)
    # Unseen words and odd casing: whatever the pointer picks is the input's own text.
    odd = [[{"role": "user", "content": t}] for t in ["SEND Zed ten pounds", "transfer to xavier next WEEK", "card?? on monday!!", ""]]
    for msgs, p in zip(odd, st.predict(odd)):
        for v in json.loads(p)["slots"].values():
            assert v and v in msgs[0]["content"], (v, msgs)
    meta = json.loads((rd.path / "train" / "model" / "student.json").read_text())
    assert meta["kind"] == "classifier" and meta["layout"] and set(meta["set_thresholds"]) == {"intents"}
    # The tagger's O and I biases are tuned on validation, saved and loaded back.
    assert meta["span_o_bias"] in BIAS_GRID and meta["span_i_bias"] in I_BIAS_GRID
    assert (st.span_bias, st.span_i_bias) == (meta["span_o_bias"], meta["span_i_bias"])
    # Set and span confidences are calibrated per field on the validation split, ECE before/after recorded.
    cal = meta["structured_calibration"]
    assert set(cal["temperature"]) == {"intents", "__spans__"} and cal["fitted_on"] == "validation"
    assert cal["ece_after"] is not None and cal["ece_before"] is not None
    both = st.predict_scored_raw(batch)  # set and span confidences before calibration, same pass
    assert [(t, c) for t, c, _ in both] == scored
    st.structured_calibration = None
    assert [r for _, _, r in both] == pytest.approx([c for _, c in st.predict_scored(batch)], abs=1e-6)
    assert meta["span_tags"] == span_tags and st.span_tags == span_tags
    if span_tags == "per_name":  # a student saved before the factored head has no "span_tags": it loads as per_name
        meta_file = rd.path / "train" / "model" / "student.json"
        meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "span_tags"}))
        assert load_student(rd.path / "train" / "model").predict(batch) == preds


def test_data_report_says_which_field_decides_the_kind(tmp_path):
    from teacher.data_report import build_data_report
    from teacher.filter_config import FilterConfig

    rows = make_records(120)
    rd = make_run(tmp_path, rows)
    shape = build_data_report(rd, FilterConfig(), write=False)["answer_shape"]
    assert shape["student"] == "encoder" and shape["types"]["intents"] == "set" and "slots.person span" in shape["line"]
    for r in rows:
        obj = json.loads(r["response"])
        obj["reply"] = "Sure, " + r["messages"][-1]["content"][::-1]
        r["response"] = json.dumps(obj)
    rd2 = RunDir.create(tmp_path / "runs2", "t")
    write_jsonl(rd2.filter_kept, rows)
    shape = build_data_report(rd2, FilterConfig(), write=False)["answer_shape"]
    assert shape["student"] == "causal_lm" and shape["decided_by"] == "reply" and "decided by field 'reply'" in shape["line"]
