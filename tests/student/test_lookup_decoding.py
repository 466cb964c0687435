"""Prompt-lookup drafts (student/lookup_decoding.py): pure Python, no model. That the engine's
answers stay plain greedy decoding's whatever the drafts are is tested on the bundled model in
tests/student/test_llamacpp.py."""
from __future__ import annotations

import json

from student.lookup_decoding import NgramDrafter, schema_exemplar


def test_drafts_copy_what_followed_the_latest_match_longest_ngram_first():
    d = NgramDrafter(max_ngram=3)
    # "5 6" occurs twice; the 3-gram "4 5 6" only once, followed by 7 8: the longest match wins
    ctx = [1, 5, 6, 9, 9, 4, 5, 6, 7, 8, 2, 4, 5, 6]
    assert d.draft(ctx, 3) == [7, 8, 2]
    assert d.draft(ctx, 1) == [7]
    assert d.draft([1, 2, 3], 4) == []  # nothing repeats, no corpus
    assert d.draft(ctx, 0) == []
    assert d.draft([3, 1, 2, 3], 4) == [1, 2, 3]  # a 1-gram match: the context's own earlier "3"


def test_corpus_and_history_supply_drafts_the_context_lacks():
    d = NgramDrafter(corpus=[[10, 11, 12, 13]], max_ngram=2, history=2)
    assert d.draft([7, 10, 11], 5) == [12, 13]
    assert d.draft([7, 20], 5) == []
    d.remember([20, 21, 22])
    assert d.draft([7, 20], 5) == [21, 22]
    d.remember([20, 30])  # the newest answer's continuation wins
    assert d.draft([7, 20], 5) == [30]
    d.remember([40, 41])
    d.remember([42, 43])  # history holds 2: [20, 21, 22] and [20, 30] are gone
    assert d.draft([7, 20], 5) == [] and d.draft([7, 10], 5) == [11, 12, 13]


def test_schema_exemplar_holds_every_key_and_label_in_the_answers_format():
    schema = {"type": "object", "properties": {
        "intents": {"type": "array", "items": {"enum": ["card", "pin"]}},
        "slots": {"type": "object", "properties": {"date": {"type": "string"}, "amount": {"type": "number"}}},
        "ok": {"type": "boolean"}}}
    text = schema_exemplar(schema, (", ", ": "))
    assert json.loads(text) == {"intents": ["card", "pin"], "slots": {"date": "", "amount": 0}, "ok": False}
    assert text.startswith('{"intents": ["card", "pin"], "slots": {"date": ""')
    assert schema_exemplar(schema, (",", ":")).startswith('{"intents":["card","pin"],"slots":{')
