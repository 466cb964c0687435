"""Cascade serving over real local HTTP: a tiny classifier student, the reference teacher, the
openai SDK as the client, and the forwarded log read back by the ingest stage."""
from __future__ import annotations

import json
import socket

import pytest

pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from core.base import read_jsonl, write_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402
from ingest.config import IngestConfig  # noqa: E402
from ingest.pipeline import run_ingest  # noqa: E402
from serving.cascade import ANSWERED_BY, CascadeServer  # noqa: E402
from student.base import Example  # noqa: E402
from student.classifier import ClassifierStudent  # noqa: E402
from student.kinds import load_student  # noqa: E402
from student.models import make_tiny_encoder  # noqa: E402
from teacher.client import TeacherClient  # noqa: E402
from teacher.reference.config import ReferenceTeacherConfig  # noqa: E402
from teacher.reference.server import ReferenceTeacher  # noqa: E402

try:  # the per-kind config (student/config.py's union); the flat one before it
    from student.config import ClassifierStudentConfig as StudentConfig
except ImportError:  # pragma: no cover
    from student.config import StudentConfig

LABELS = {"refund": "i want my money back", "card": "where is my new card", "pin": "my pin is blocked"}
# Words the student never saw with a label: its probe heads are unsure about these.
UNSURE = ["tomorrow", "my card", "sunny today", "new money"]


def msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "Classify."}, {"role": "user", "content": text}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model dir, threshold, reference answers file): confident phrases score above the threshold, UNSURE below."""
    tmp = tmp_path_factory.mktemp("cascade")
    enc = make_tiny_encoder(tmp / "enc", list(LABELS.values()) + ["weather today sunny tomorrow"])
    ex = [Example(f"{k}{i}", [{"role": "user", "content": t}], json.dumps({"intent": k})) for i in range(4) for k, t in LABELS.items()]
    st = ClassifierStudent.create(StudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0}), ex)
    st.warm_start(ex)
    st.save(tmp / "model")
    scored = load_student(tmp / "model").predict_scored([msgs(t) for t in list(LABELS.values()) + UNSURE])
    sure, unsure = [c for _, c in scored[: len(LABELS)]], [c for _, c in scored[len(LABELS):]]
    assert max(unsure) < min(sure), (sure, unsure)  # the premise of the test
    threshold = (max(unsure) + min(sure)) / 2
    answers = tmp / "answers.jsonl"
    write_jsonl(answers, [{"id": f"a{i}", "user": t, "response": json.dumps({"intent": f"teacher-{i}"})} for i, t in enumerate(list(LABELS.values()) + UNSURE)])
    return tmp / "model", threshold, answers


@pytest.fixture
def teacher(setup):
    t = ReferenceTeacher(ReferenceTeacherConfig(answers=str(setup[2])))
    t.start()
    yield t
    t.stop()


def client_for(url: str) -> TeacherClient:
    return TeacherClient(model="openai/reference-teacher", api_base=url, timeout_s=5, max_retries=1, backoff_base_s=0.01)


def ask(url: str, text: str):
    raw = openai.OpenAI(base_url=url, api_key="x", max_retries=0).chat.completions.with_raw_response.create(model="anything", messages=msgs(text))
    return raw.headers.get(ANSWERED_BY), raw.parse()


def test_confident_requests_stay_with_the_student_uncertain_go_to_the_teacher_and_are_ingested(setup, teacher, tmp_path):
    model_dir, threshold, _ = setup
    log = tmp_path / "forwarded.jsonl"
    with CascadeServer(model_dir, threshold, client_for(teacher.base_url), forward_log=log) as url:
        for text in LABELS.values():
            by, r = ask(url, text)
            assert by == "student" and r.model == "student" and r.model_extra["distill"]["confidence"] >= threshold
        assert teacher.stats()["requests"] == 0  # confident requests never reach the teacher
        for i, text in enumerate(UNSURE, start=len(LABELS)):
            by, r = ask(url, text)
            assert by == "teacher" and r.model == "openai/reference-teacher"
            assert r.choices[0].message.content == json.dumps({"intent": f"teacher-{i}"})
            assert r.model_extra["distill"]["confidence"] < threshold and r.model_extra["distill"]["fallback"] is False
        stream = list(openai.OpenAI(base_url=url, api_key="x", max_retries=0).chat.completions.create(
            model="m", messages=msgs(next(iter(LABELS.values()))), stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == json.dumps({"intent": "refund"})
        stats = openai.OpenAI(base_url=url, api_key="x").get("/stats", cast_to=object)
    assert teacher.stats()["requests"] == len(UNSURE) and set(teacher.answered) == {f"a{i}" for i in range(len(LABELS), len(LABELS) + len(UNSURE))}
    assert stats["requests"] == len(LABELS) + len(UNSURE) + 1 and stats["answered_by_student"] == len(LABELS) + 1
    assert stats["forwarded"] == stats["answered_by_teacher"] == stats["logged"] == len(UNSURE) and stats["student_fallback"] == 0
    assert stats["threshold"] == threshold

    rows = list(read_jsonl(log))
    assert [r["messages"][:-1] for r in rows] == [msgs(t) for t in UNSURE]
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    # the next run's ingest reads the log as is: every forwarded request becomes a training record
    cfg = IngestConfig.model_validate({"source": {"kind": "jsonl", "path": str(log)}, "parquet": False, "holdout_fraction": 0.0})
    rd = RunDir.create(tmp_path / "runs", "next")
    counts = run_ingest(cfg, rd)
    assert counts["read"] == counts["kept"] == counts["train"] == len(UNSURE) and counts["quarantined"] == 0
    train = {r["messages"][-1]["content"]: r for r in read_jsonl(rd.path / "ingest" / "train.jsonl")}
    assert {u: train[u]["response"] for u in UNSURE} == {u: json.dumps({"intent": f"teacher-{i}"}) for i, u in enumerate(UNSURE, start=len(LABELS))}
    assert all(train[u]["metadata"]["source"] == "cascade" for u in UNSURE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_teacher_yields_flagged_student_answers(setup, tmp_path):
    model_dir, threshold, _ = setup
    log = tmp_path / "forwarded.jsonl"
    dead = client_for(f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    with CascadeServer(model_dir, threshold, dead, forward_log=log, teacher_timeout_s=10) as url:
        student_answers = load_student(model_dir).predict([msgs(t) for t in UNSURE])
        for text, expected in zip(UNSURE, student_answers):
            by, r = ask(url, text)
            assert by == "student-fallback" and r.model == "student" and r.choices[0].message.content == expected
            d = r.model_extra["distill"]
            assert d["fallback"] is True and d["answered_by"] == "student-fallback" and "unreachable" in d["teacher_error"]
        by, _ = ask(url, "i want my money back")
        assert by == "student"
        stats = openai.OpenAI(base_url=url, api_key="x").get("/stats", cast_to=object)
    assert stats["student_fallback"] == stats["forwarded"] == len(UNSURE) and stats["answered_by_teacher"] == 0
    assert not log.exists() or log.read_text() == ""  # nothing the teacher did not answer is logged


def test_without_a_teacher_every_uncertain_request_gets_the_flagged_student_answer(setup):
    srv = CascadeServer(setup[0], 1.01, None)  # above any confidence: everything is uncertain
    url = srv.start()
    try:
        by, r = ask(url, "i want my money back")
        assert by == "student-fallback" and r.choices[0].message.content == json.dumps({"intent": "refund"})
        assert r.model_extra["distill"]["teacher_error"] == "no teacher configured"
    finally:
        srv.stop()


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def test_a_forwarded_tool_request_reaches_the_teacher_with_its_tools_and_comes_back_as_openai_tool_calls(setup, tmp_path):
    """A request with `tools` the student is unsure of: the teacher is sent the same tools, its
    tool calls come back in OpenAI shape (content null, finish_reason tool_calls), and the forward
    log keeps tools and calls so the next ingest learns the call, not an empty answer."""
    model_dir, threshold, _ = setup
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, [{"id": "w", "user": "sunny today", "tools": ["get_weather"], "response": "",
                           "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}])
    teacher = ReferenceTeacher(ReferenceTeacherConfig(answers=str(answers)))
    teacher.start()
    log = tmp_path / "forwarded.jsonl"
    try:
        with CascadeServer(model_dir, threshold, client_for(teacher.base_url), forward_log=log) as url:
            raw = openai.OpenAI(base_url=url, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
                model="m", messages=msgs("sunny today"), tools=[WEATHER_TOOL], tool_choice="auto")
            r = raw.parse()
        sent = teacher.recent_bodies[-1]
    finally:
        teacher.stop()
    assert raw.headers.get(ANSWERED_BY) == "teacher"
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather"] and sent["tool_choice"] == "auto"
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [("get_weather", {"city": "Oslo"})]

    cfg = IngestConfig.model_validate({"source": {"kind": "jsonl", "path": str(log)}, "parquet": False, "holdout_fraction": 0.0})
    rd = RunDir.create(tmp_path / "runs", "next")
    counts = run_ingest(cfg, rd)
    assert counts["read"] == counts["kept"] == 1 and counts["quarantined"] == 0
    (row,) = read_jsonl(rd.path / "ingest" / "train.jsonl")
    assert [t["function"]["name"] for t in row["tools"]] == ["get_weather"]
    assert [(c["name"], c["arguments"]) for c in row["tool_calls"]] == [("get_weather", {"city": "Oslo"})]
