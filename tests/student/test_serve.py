"""StudentServer: real local HTTP through the openai SDK, over a tiny saved classifier student."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("torch")
openai = pytest.importorskip("openai")

from student.serve import StudentServer  # noqa: E402

LABELS = {"refund": "i want my money back", "card": "where is my new card", "pin": "my pin is blocked"}
KEY = "sk-test-123"


@pytest.fixture(scope="module")
def model_dir(saved) -> Path:
    """A saved student whose linear-probe heads already separate the three phrases (conftest's)."""
    from student.kinds import load_student

    path, ex = saved
    assert load_student(path).predict([e.messages for e in ex]) == [e.target for e in ex]
    return path


@pytest.fixture(scope="module")
def server(model_dir):
    with StudentServer(model_dir, api_key=KEY) as url:
        yield url


def msgs(text: str) -> list[dict]:
    return [{"role": "system", "content": "Classify."}, {"role": "user", "content": text}]


def test_chat_completion_via_openai_sdk(server):
    client = openai.OpenAI(base_url=server, api_key=KEY, max_retries=0)
    r = client.chat.completions.create(model="student", messages=msgs("where is my new card"))
    assert r.choices[0].message.content == '{"intent": "card"}'
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert [m.id for m in client.models.list()] == ["student"]


def test_streaming_with_usage_chunk(server):
    client = openai.OpenAI(base_url=server, api_key=KEY, max_retries=0)
    chunks = list(client.chat.completions.create(model="student", messages=msgs("my pin is blocked"), stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == '{"intent": "pin"}'
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)
    # without include_usage: no usage chunk
    plain = list(client.chat.completions.create(model="student", messages=msgs("my pin is blocked"), stream=True))
    assert all(c.usage is None for c in plain)


def test_bearer_key_enforced(server):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server, api_key="wrong", max_retries=0).chat.completions.create(model="s", messages=msgs("x"))
    req = urllib.request.Request(server + "/chat/completions", data=json.dumps({"messages": msgs("x")}).encode(),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


def test_bad_request_and_unknown_path(server):
    client = openai.OpenAI(base_url=server, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="student", messages=[])
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="student", prompt="hi")


def test_concurrent_requests_are_batched_correctly(server):
    client = openai.OpenAI(base_url=server, api_key=KEY, max_retries=0)
    items = [(k, t) for k, t in LABELS.items()] * 10

    def ask(item):
        return client.chat.completions.create(model="student", messages=msgs(item[1])).choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(ask, items))
    assert outs == [json.dumps({"intent": k}) for k, _ in items]


def test_open_server_without_key(model_dir):
    srv = StudentServer(model_dir)
    url = srv.start()
    try:
        client = openai.OpenAI(base_url=url, api_key="anything", max_retries=0)
        assert client.chat.completions.create(model="x", messages=msgs("i want my money back")).choices[0].message.content == '{"intent": "refund"}'
    finally:
        srv.stop()


def test_child_process_server_answers_and_stops(model_dir):
    """The eval's student server: its own process (no shared interpreter lock with the client)."""
    from student.serve_process import ChildStudentServer

    srv = ChildStudentServer(model_dir, api_key=KEY, num_threads=1)
    url = srv.start()
    try:
        assert srv.served == "fp32"  # no fast-path choice recorded in this save
        client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0)
        assert client.chat.completions.create(model="student", messages=msgs("my pin is blocked")).choices[0].message.content == '{"intent": "pin"}'
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).chat.completions.create(model="s", messages=msgs("x"))
        proc = srv.proc
    finally:
        srv.stop()
    assert proc.poll() is not None


def test_child_process_server_reports_a_bad_model(tmp_path):
    from core.base import DistillError
    from student.serve_process import ChildStudentServer

    with pytest.raises(DistillError, match="did not start"):
        ChildStudentServer(tmp_path, startup_timeout_s=120).start()


def test_model_is_only_called_from_the_batcher_thread(model_dir, monkeypatch):
    """The warm-up too: an OpenMP runtime binds its thread team to the first thread that enters it,
    and a warm-up from the starting thread made llama.cpp's served decoding 1.5x slower."""
    import threading

    from student.classifier import ClassifierStudent

    callers: list[str] = []
    real = ClassifierStudent.predict

    def spy(self, batch):
        callers.append(threading.current_thread().name)
        return real(self, batch)

    monkeypatch.setattr(ClassifierStudent, "predict", spy)
    with StudentServer(model_dir) as url:
        client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
        assert client.chat.completions.create(model="student", messages=msgs("my pin is blocked")).choices[0].message.content == '{"intent": "pin"}'
    assert len(callers) == 2 and set(callers) == {"student-batcher"}, callers
