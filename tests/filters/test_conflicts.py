from teacher.filter_config import ConflictFilterConfig
from teacher.filters.conflicts import ConflictFilter, DedupFilter

from filter_records import rec

A, B = '{"intent": "card_arrival"}', '{"intent": "card_delivery_estimate"}'
Q = "When will my card arrive?"


def test_conflict_majority_keeps_majority():
    rs = [rec(A, user=Q), rec(B, user=Q), rec(A, user=Q), rec(B, user="other question")]
    v = ConflictFilter(ConflictFilterConfig()).check_all(rs)
    assert [x.keep for x in v] == [True, False, True, True]
    assert v[1].reason.startswith("conflict_minority")


def test_conflict_tie_and_drop_mode():
    rs = [rec(A, user=Q), rec(B, user=Q)]
    v = ConflictFilter(ConflictFilterConfig()).check_all(rs)
    assert not any(x.keep for x in v) and v[0].reason.startswith("conflict_tie")
    v = ConflictFilter(ConflictFilterConfig(mode="drop")).check_all([rec(A, user=Q), rec(A, user=Q), rec(B, user=Q)])
    assert not any(x.keep for x in v) and v[0].reason.startswith("conflict: 2 different outputs")


def test_splits_grouped_separately():
    v = ConflictFilter(ConflictFilterConfig()).check_all([rec(A, user=Q), rec(B, user=Q, split="holdout")])
    assert all(x.keep for x in v)


def test_dedup_keeps_first_of_identical_pairs():
    rs = [rec(A, user=Q, rid="first"), rec('{"intent":"card_arrival"}', user=Q, rid="again"), rec(A, user="different")]
    v = DedupFilter(ConflictFilterConfig()).check_all(rs)
    assert [x.keep for x in v] == [True, False, True]
    assert v[1].reason == "duplicate: same input and output as first"
    assert not DedupFilter(ConflictFilterConfig(dedup=False)).active
