"""The span fields' BIO tagger (student/span.py) and the set fields' probe and temperature
(student/labelset.py), unit by unit on hand-built tensors."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from student.labelset import fit_multilabel  # noqa: E402
from student.span import (IGNORE, decode, factored_tags, fit_span_probe, gold_spans, make_span_head, span_loss, span_text,  # noqa: E402
                          spans_of, tags_of, tags_tensor, tune_biases, tune_o_bias, O_WEIGHT)

# "[CLS] pay bob next week [SEP]": token offsets as a fast tokenizer gives them
TEXT = "pay bob next week"
OFFSETS = [(0, 0), (0, 3), (4, 7), (8, 12), (13, 17), (0, 0)]
OK = [b > a for a, b in OFFSETS]


def test_tags_round_trip_through_spans():
    spans = [(3, 4), (2, 2), None]  # date = "next week", person = "bob", amount absent
    tags = tags_of(spans, OK)
    assert tags == [IGNORE, 0, 3, 1, 2, IGNORE]  # B-person=3, B-date=1, I-date=2
    assert spans_of(tags, OK, 3) == spans
    assert [span_text(TEXT, OFFSETS, *s) for s in spans if s] == ["next week", "bob"]
    # An unmatched span leaves the row without targets (its other tokens cannot be called O).
    assert tags_of([(3, 4), "unmatched", None], OK) == [IGNORE] * 6
    assert gold_spans(tags_tensor([tags, [IGNORE] * 6]), torch.tensor([OK, OK]), 3) == [spans, None]


def test_spans_of_is_lenient_and_picks_the_most_probable_span_per_field():
    # An I- tag with no B- opens a span; a second span of the same field loses to a likelier one.
    assert spans_of([IGNORE, 2, 2, 0, 0, IGNORE], OK, 1) == [(1, 2)]
    assert spans_of([IGNORE, 1, 0, 1, 2, IGNORE], OK, 1, logp=[0, -3.0, 0, -0.1, -0.1, 0]) == [(3, 4)]
    # A tag on a special token is never a span (ok False there).
    assert spans_of([1, 0, 0, 0, 0, 1], OK, 1) == [None]


def test_decode_probability_bias_and_no_invented_text():
    lg = torch.full((1, 6, 5), -4.0)
    lg[0, :, 0] = 4.0  # O everywhere ...
    lg[0, 2, 0], lg[0, 2, 3] = 0.5, 1.0  # ... but "bob" leans B-person
    ok = torch.tensor([OK])
    spans, p = decode(lg, ok)
    assert spans == [[None, (2, 2)]] and 0 < float(p[0]) < 1
    spans, _ = decode(lg, ok, o_bias=1.0)  # a larger O bias drops the weak slot
    assert spans == [[None, None]]
    # Tempering (T > 1) lowers the confidence of the same answer; the answer does not move.
    s2, p2 = decode(lg, ok, temperature=2.0)
    assert s2 == [[None, (2, 2)]] and float(p2[0]) < float(p[0])
    # Random logits: every decoded span is a slice of the input's own characters.
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        for row in decode(torch.randn(1, 6, 5, generator=g) * 3, ok)[0]:
            for s in row:
                assert s is None or span_text(TEXT, OFFSETS, *s) in TEXT


def test_factored_tags_are_boundary_times_name():
    """The factored head's tag distribution is P(O/B/I) x P(name): B-k and I-k share the name's
    probability, and the B-/I- mass does not depend on the name logits."""
    out = torch.randn(5, 3 + 4, generator=torch.Generator().manual_seed(1))
    p = factored_tags(out, 4).softmax(-1)
    pb, pn = out[:, :3].softmax(-1), out[:, 3:].softmax(-1)
    assert torch.allclose(p[:, 0], pb[:, 0], atol=1e-6)
    assert torch.allclose(p[:, 1::2], pb[:, 1:2] * pn, atol=1e-6) and torch.allclose(p[:, 2::2], pb[:, 2:3] * pn, atol=1e-6)
    from student.config import ClassifierOptions

    assert ClassifierOptions().span_tags == "factored"  # the default the README's NLU++ figures use


@pytest.mark.parametrize("factored", [True, False])
def test_tag_probe_learns_and_o_bias_tunes_on_validation(factored):
    g = torch.Generator().manual_seed(0)
    n, t, h = 64, 6, 8
    states = torch.randn(n, t, h, generator=g)
    tags = torch.zeros(n, t, dtype=torch.long)
    tags[:, [0, -1]] = IGNORE
    states[:, 2, 0] += 6.0  # token 2 is a B-0 wherever feature 0 is high
    tags[:, 2] = 1
    head = make_span_head(h, 1, factored=factored)
    assert fit_span_probe(head, states, tags) == 1.0
    lg = head(states)
    ok = tags != IGNORE
    assert span_loss(lg, tags) < 0.5
    assert tune_o_bias([(lg.detach(), ok, tags)], 1) == 0.0  # already right: ties go to 0


def test_set_probe_is_fit_linear_with_bce():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(200, 6, generator=g)
    Y = torch.stack([(X[:, 0] > 0), (X[:, 1] + X[:, 2] > 0)], -1).float()
    head = torch.nn.Linear(6, 2)
    assert fit_multilabel(head, X, Y, weight_decay=1e-4) >= 0.95
    assert ((head(X) > 0) == (Y > 0.5)).float().mean() >= 0.97


def test_span_text_widens_to_whole_words_only_when_asked():
    text = "from 5ish in the afternoon"
    offsets = [(0, 0), (0, 4), (5, 6), (6, 9), (10, 12), (13, 16), (17, 26), (0, 0)]  # "5" "##ish" split
    assert span_text(text, offsets, 3, 3) == "ish"
    assert span_text(text, offsets, 3, 3, whole_words=True) == "5ish"
    assert span_text(text, offsets, 2, 6, whole_words=True) == "5ish in the afternoon"  # already whole: unchanged


def test_viterbi_keeps_one_span_one_type():
    # Argmax per token would give "Dec" B-date_to and "31" I-date_period (two fragments); BIO
    # Viterbi makes it one span of one type.
    text, offsets = "till Dec 31", [(0, 0), (0, 4), (5, 8), (9, 11), (0, 0)]
    ok = torch.tensor([[b > a for a, b in offsets]])
    lg = torch.full((1, 5, 5), -5.0)
    lg[0, :, 0] = 3.0
    lg[0, 2, 1], lg[0, 2, 0] = 4.0, 0.0  # B-field0 (date_to) on "Dec"
    lg[0, 3, 4], lg[0, 3, 2], lg[0, 3, 0] = 3.0, 2.5, 0.0  # I-field1 slightly above I-field0 on "31"
    spans, _ = decode(lg, ok)
    assert spans == [[(2, 3), None]] and span_text(text, offsets, 2, 3) == "Dec 31"


def test_i_bias_tunes_on_validation_when_the_tagger_ends_spans_early():
    # "next week" is gold; the tagger opens the span on "next" but leans O on "week" (by 2 nats),
    # as the NLU++ tagger did on a slot's last words: an I bias, tuned on validation, finishes it.
    tags = torch.tensor([tags_of([(3, 4)], OK)] * 4)
    ok = tags != IGNORE
    lg = torch.full((4, 6, 3), -4.0)
    lg[:, :, 0] = 3.0
    lg[:, 3, 1], lg[:, 3, 0] = 4.0, 0.0  # B-date on "next"
    lg[:, 4, 2], lg[:, 4, 0] = 1.0, 3.0  # I-date under O on "week"
    assert decode(lg, ok)[0][0] == [(3, 3)]  # untuned: "next" alone
    o_bias, i_bias = tune_biases([(lg, ok, tags)], 1)
    assert i_bias > 0.0  # (the smallest |biases| that get it right)
    assert decode(lg, ok, o_bias, i_bias=i_bias)[0][0] == [(3, 4)]
    assert tune_o_bias([(lg, ok, tags)], 1) == 0.0  # the O bias alone cannot lengthen it without inventing spans


def test_o_weight_scales_only_the_o_tokens_loss():
    g = torch.Generator().manual_seed(2)
    lg = torch.randn(2, 6, 3, generator=g)
    tags = torch.tensor([tags_of([(3, 4)], OK), tags_of([None], OK)])
    full, no_o = span_loss(lg, tags, o_weight=1.0), span_loss(lg, tags, o_weight=0.0)
    slot_only = torch.where(tags > 0, tags, IGNORE)  # the B-/I- tokens alone
    assert torch.isclose(no_o, span_loss(lg, slot_only))
    o_only = torch.where(tags == 0, tags, IGNORE)
    assert torch.isclose(span_loss(lg, tags, o_weight=0.25), no_o + 0.25 * span_loss(lg, o_only, o_weight=1.0))
    assert torch.isclose(full, no_o + span_loss(lg, o_only, o_weight=1.0))
    assert torch.isclose(span_loss(lg, tags), span_loss(lg, tags, o_weight=O_WEIGHT)) and O_WEIGHT == 0.25  # the default (README)


def test_span_error_breakdown_types_and_counts_add_up():
    from bench.span_errors import breakdown

    text = "from the 21st of May to the 3rd, pay bob at 5 pm"
    gold = {"date_from": "21st of May", "date_to": "3rd", "person_name": "bob", "time": "5 pm"}
    pred = {"date_from": "May", "date": "3rd", "time": "5 pm", "amount_of_money": "pay"}
    b = breakdown([(text, pred, gold), ("hi", {}, {})])
    assert b["errors"] == {"boundary_short": 1, "wrong_name": 1, "missed": 1, "correct": 1, "extra": 1}
    assert b["confusions"] == {"date_to->date": 1}
    assert b["correct"] + b["gold_errors"] == b["gold"] == 4 and b["predicted"] == 4
    import json

    from eval.metrics import span_field_metrics

    as_json = [json.dumps({"slots": pred}), json.dumps({"slots": {}})], [json.dumps({"slots": gold}), json.dumps({"slots": {}})]
    assert b["micro_f1"] == round(span_field_metrics(*as_json, "slots")["micro_f1"], 4) == 0.25  # the eval's own metric
