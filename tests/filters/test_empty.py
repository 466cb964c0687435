from teacher.filter_config import EmptyFilterConfig
from teacher.filters.empty import EmptyFilter

from filter_records import rec


def test_empty_outputs_dropped_real_ones_kept():
    f = EmptyFilter(EmptyFilterConfig())
    assert f.check(rec('{"intent": "card_arrival"}')).keep
    for bad, why in [(None, "null"), ("", "blank"), ("  \n\t ", "blank")]:
        v = f.check(rec(bad))
        assert not v.keep and v.reason.startswith("empty:") and why in v.reason
