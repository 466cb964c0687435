"""LLM judge against a tiny local OpenAI-compatible stub; calls go through the replay ledger."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.base import DistillError
from teacher.config import TeacherConfig
from teacher.filter_config import JudgeFilterConfig
from teacher.filters.judge import JudgeFilter, parse_score

from filter_records import rec


class _Stub(BaseHTTPRequestHandler):
    calls = 0

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        answer = body["messages"][-1]["content"].split("ANSWER:\n", 1)[1]
        if "card_arrival" in answer:
            content = '{"score": 9, "reason": "correct intent"}'
        elif "garbled" in answer:
            content = "I think this is fine."
        else:
            content = '{"score": 2, "reason": "wrong intent for a card delivery question"}'
        out = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def stub():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Stub.calls = 0
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_parse_score():
    assert parse_score('{"score": 8, "reason": "ok"}') == (8.0, "ok")
    assert parse_score('Sure. ```json\n{"score": "7"}\n```')[0] == 7.0
    assert parse_score("Score: 4/10 - misses the format")[0] == 4.0
    assert parse_score("looks good")[0] is None
    assert parse_score('{"score": 42}')[0] is None


def test_judge_scores_and_never_pays_twice(stub, tmp_path):
    teacher = TeacherConfig(model="openai/judge-stub", api_base=stub, input_cost_per_token=1e-6,
                            output_cost_per_token=2e-6, progress=False, max_retries=0)
    cfg = JudgeFilterConfig(enabled=True, threshold=7)
    records = [rec('{"intent": "card_arrival"}'), rec('{"intent": "exchange_rate"}'), rec('{"intent": "garbled"}')]
    ledger = tmp_path / "ledger.sqlite"

    f = JudgeFilter(cfg, teacher=teacher, ledger_path=ledger)
    v = f.check_all(records)
    assert v[0].keep and v[0].update == {"judge_score": 9.0}
    assert not v[1].keep and v[1].reason.startswith("judge_low_score: 2 < 7")
    assert not v[2].keep and v[2].reason.startswith("judge_failed: no score")
    assert _Stub.calls == 3 and f.calls["ledger_hits"] == 0 and f.calls["cost_usd"] > 0

    again = JudgeFilter(cfg, teacher=teacher, ledger_path=ledger)
    v2 = again.check_all(records)
    assert _Stub.calls == 3, "a rerun must be answered from the ledger"
    assert again.calls["ledger_hits"] == 3 and again.calls["cost_usd"] == 0
    assert [x.keep for x in v2] == [x.keep for x in v]


def test_judge_needs_a_ledger():
    with pytest.raises(DistillError, match="ledger"):
        JudgeFilter(JudgeFilterConfig(enabled=True), teacher=TeacherConfig())


def test_run_filters_with_judge(stub, tmp_path, make_rd):
    from teacher.filter_config import FilterConfig
    from teacher.filters import run_filters

    teacher = TeacherConfig(model="openai/judge-stub", api_base=stub, progress=False, max_retries=0)
    rd = make_rd([rec('{"intent": "card_arrival"}', user="where is my card"), rec('{"intent": "exchange_rate"}', user="card late"),
                  rec("I'm sorry, but I can't help with that.", user="x")])
    counts = run_filters(FilterConfig(judge=JudgeFilterConfig(enabled=True)), rd, teacher=teacher, ledger_path=tmp_path / "l.sqlite")
    assert counts["kept"] == 1 and counts["dropped_by_filter"] == {"refusal": 1, "judge": 1}
    assert _Stub.calls == 2  # the refusal never reached the paid judge
    judge = next(f for f in rd.stage("filter")["figures"]["filters"] if f["name"] == "judge")
    assert "judged 2" in judge["note"]
