from teacher.filter_config import TruncationFilterConfig
from teacher.filters.truncation import TruncationFilter

from filter_records import rec


def test_cut_off_answers_dropped():
    f = TruncationFilter(TruncationFilterConfig())
    assert f.check(rec("Your card usually arrives within 3-5 working days.", finish_reason="stop")).keep
    assert f.check(rec('{"intent": "card_arrival"}', finish_reason=None)).keep  # providers that omit it
    v = f.check(rec("Your card usually arrives within 3-5 working days. If it has not arrived after", finish_reason="length"))
    assert not v.keep and v.reason == "truncated: finish_reason=length"
    v = f.check(rec("", finish_reason="content_filter"))
    assert not v.keep and v.reason.startswith("withheld")


def test_finish_reasons_configurable():
    f = TruncationFilter(TruncationFilterConfig(finish_reasons=["length"]))
    assert f.check(rec("x", finish_reason="content_filter")).keep
