from teacher.filter_config import ConsistencyFilterConfig
from teacher.filters.consistency import ConsistencyFilter

from filter_records import rec

A, B, C = '{"intent": "card_arrival"}', '{"intent": "card_delivery_estimate"}', '{"intent": "lost_or_stolen_card"}'


def test_single_sample_passes():
    assert ConsistencyFilter(ConsistencyFilterConfig()).check(rec(A)).keep
    assert ConsistencyFilter(ConsistencyFilterConfig()).check(rec(A, samples=[A])).keep


def test_agreeing_samples_kept_with_agreement():
    # key order and spacing differ: parsed JSON is compared, not text
    v = ConsistencyFilter(ConsistencyFilterConfig()).check(rec(A, samples=[A, '{ "intent":"card_arrival" }', A, B, A]))
    assert v.keep and v.update["agreement"] == 0.8 and "response" not in v.update


def test_inconsistent_samples_dropped():
    v = ConsistencyFilter(ConsistencyFilterConfig(threshold=0.6)).check(rec(A, samples=[A, B, C, A, B]))
    assert not v.keep and v.reason.startswith("low_agreement: majority answer in 2 of 5")


def test_minority_response_replaced_or_dropped():
    r = rec(B, samples=[B, A, A, A, A])
    v = ConsistencyFilter(ConsistencyFilterConfig()).check(r)
    assert v.keep and v.update["response"] == A
    v = ConsistencyFilter(ConsistencyFilterConfig(on_minority_response="drop")).check(r)
    assert not v.keep and v.reason.startswith("minority_response")


def test_compare_selected_fields_only():
    s = ['{"intent": "card_arrival", "why": "asks where the card is"}', '{"intent": "card_arrival", "why": "card not received"}',
         '{"intent": "card_arrival", "why": "waiting for card"}']
    assert not ConsistencyFilter(ConsistencyFilterConfig()).check(rec(s[0], samples=s)).keep
    assert ConsistencyFilter(ConsistencyFilterConfig(fields=["intent"])).check(rec(s[0], samples=s)).keep


def test_free_text_samples_normalised():
    s = ["Your card arrives in 3-5 days.", "your card arrives in 3-5 days", "Your card  arrives in 3-5 days!"]
    assert ConsistencyFilter(ConsistencyFilterConfig(threshold=1.0)).check(rec(s[0], samples=[{"content": t} for t in s])).keep
