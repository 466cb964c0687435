import json

import pytest

from core.base import write_jsonl
from teacher.data_report import (InsufficientDataError, build_data_report, check_sufficiency,
                                 data_report_markdown)
from teacher.filter_config import FilterConfig
from teacher.filters import run_filters

from filter_records import rec

INTENTS = ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed"]

FACTS = [
    ("Who designed the Eiffel Tower?", "The Eiffel Tower was designed by the engineering firm of Gustave Eiffel; the main design work was done by Maurice Koechlin and Emile Nouguier, and it opened on 31 March 1889 for the Exposition Universelle in Paris."),
    ("When was the Treaty of Westphalia signed?", "It was signed in October 1648 in Osnabrück and Münster, ending the Thirty Years' War in the Holy Roman Empire and the Eighty Years' War between Spain and the Dutch Republic."),
    ("What is the population of Lagos?", "Lagos had an estimated 15.4 million inhabitants in 2023, making it the largest city in Nigeria and one of the largest in Africa; the wider metropolitan area exceeds 21 million."),
    ("Who won the 1966 FIFA World Cup?", "England won the 1966 FIFA World Cup, beating West Germany 4-2 after extra time at Wembley Stadium in London on 30 July 1966, with Geoff Hurst scoring a hat-trick."),
    ("How tall is Mount Kilimanjaro?", "Kibo's Uhuru Peak on Mount Kilimanjaro in Tanzania rises to 5,895 metres, first summited by Hans Meyer and Ludwig Purtscheller on 6 October 1889."),
    ("When did Apollo 11 land?", "Apollo 11's lunar module Eagle landed in the Sea of Tranquility on 20 July 1969 at 20:17 UTC; Neil Armstrong and Buzz Aldrin walked on the Moon while Michael Collins orbited."),
]


def _write_kept(rd_path, records):
    write_jsonl(rd_path / "filter" / "kept.jsonl", records)
    write_jsonl(rd_path / "filter" / "dropped.jsonl", [])


def test_sufficiency_50_kept_stops_unless_forced(make_rd):
    rd = make_rd([rec(json.dumps({"intent": INTENTS[i % 4]}), user=f"question {i}") for i in range(50)])
    run_filters(FilterConfig(), rd)
    report = json.loads((rd.path / "filter" / "data_report.json").read_text())
    assert report["sufficiency"]["status"] == "insufficient"
    with pytest.raises(InsufficientDataError, match=r"only 50 kept training examples.*--force"):
        check_sufficiency(report)
    warnings = check_sufficiency(report, force=True)
    assert any("50 kept training examples" in w for w in warnings)
    assert "STOP" in (rd.path / "filter" / "data_report.md").read_text()


def test_between_100_and_500_warns(make_rd):
    rd = make_rd([rec(json.dumps({"intent": INTENTS[i % 4]}), user=f"question {i}") for i in range(150)])
    run_filters(FilterConfig(), rd)
    report = build_data_report(rd, FilterConfig(), write=False)
    assert report["sufficiency"]["status"] == "warn"
    assert any("under 500" in w for w in check_sufficiency(report))


def test_structured_report_labels_lengths_agreement(make_rd):
    A, B = '{"intent": "card_arrival"}', '{"intent": "exchange_rate"}'
    records = [rec(json.dumps({"intent": INTENTS[i % 4]}), user=f"q{i}", completion_tokens=9) for i in range(600)]
    records += [rec(A, user="where is my card", samples=[A, A, A]), rec(A, user="card?", samples=[A, B, A])]
    records.append(rec('{"intent": "card_arrival"}', user="x", split="holdout"))
    rd = make_rd(records)
    run_filters(FilterConfig(), rd)
    r = json.loads((rd.path / "filter" / "data_report.json").read_text())
    assert r["counts"]["kept_train"] == 602 and r["counts"]["kept_holdout"] == 1
    assert r["labels"]["field"] == "intent" and r["labels"]["counts"]["card_arrival"] == 152
    assert r["format"]["kind"] == "json" and r["format"]["dominant_keys_share"] == 1.0
    assert r["lengths"]["output_tokens"]["p50"] == 9
    assert r["self_agreement"]["prompts_with_samples"] == 2 and r["self_agreement"]["unanimous_share"] == 0.5
    assert r["sufficiency"]["status"] == "ok" and not r["retrieval_hint"]["hint"]
    md = data_report_markdown(r)
    assert "## Labels (`intent`, 4 distinct)" in md and "mean agreement" in md


def test_recalled_facts_get_retrieval_hint(make_rd):
    recs = []
    for i in range(120):
        q, a = FACTS[i % len(FACTS)]
        recs.append(rec(f"{a} (Source note {i}: see entry {1000 + i}.)", user=f"{q} #{i}"))
    rd = make_rd(recs)
    run_filters(FilterConfig(), rd)
    r = json.loads((rd.path / "filter" / "data_report.json").read_text())
    assert r["retrieval_hint"]["hint"], r["retrieval_hint"]["signals"]
    assert "retrieval" in (rd.path / "filter" / "data_report.md").read_text().lower()


def test_rewrite_behaviour_gets_no_hint(make_rd):
    # Polite rewrites of the user's own text: long, varied free text, but the names and numbers
    # come from the prompt, so it is a behaviour, not recall.
    recs = []
    for i in range(120):
        name, amount, city = ["Maria Lopez", "John Smith", "Aiko Tanaka"][i % 3], 20 + i, ["Dublin", "Cork", "Galway"][i % 3]
        user = f"rewrite politely: {name} here, you charged me {amount} EUR twice in {city} on order {5000 + i}, fix it now"
        out = (f"Hello, this is {name}. I noticed that I was charged {amount} EUR twice for order {5000 + i} in {city}. "
               f"Could you please look into this and refund the duplicate payment? Thank you for your help.")
        recs.append(rec(out, user=user))
    rd = make_rd(recs)
    run_filters(FilterConfig(), rd)
    r = json.loads((rd.path / "filter" / "data_report.json").read_text())
    assert not r["retrieval_hint"]["hint"]
    assert not r["retrieval_hint"]["signals"]["novel_facts_per_100_tokens"]["met"]
