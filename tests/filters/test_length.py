from teacher.filter_config import LengthFilterConfig
from teacher.filters.length import LengthFilter, output_tokens

from filter_records import rec


def test_bounds_off_by_default():
    assert not LengthFilter(LengthFilterConfig()).active


def test_min_and_max_tokens():
    f = LengthFilter(LengthFilterConfig(min_tokens=3, max_tokens=12))
    assert f.check(rec("Your card arrives in 3-5 working days.")).keep
    v = f.check(rec("OK"))
    assert not v.keep and v.reason.startswith("too_short: 1 tokens")
    v = f.check(rec("word " * 40))
    assert not v.keep and v.reason.startswith("too_long: 40 tokens > max_tokens 12")


def test_reported_tokens_win_when_present():
    r = rec("short text", completion_tokens=99)
    assert output_tokens(r) == 99
    assert output_tokens(r, use_reported=False) == 2
