"""The reference teacher over real HTTP: answers, errors, streaming, faults, rate limit, idempotency."""
from __future__ import annotations

import json
import urllib.error
import urllib.request


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict, str]:
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def ask(text: str, **kw) -> dict:
    return {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": text}], **kw}


def test_answers_exact_and_normalised_with_usage(dataset, serve):
    _, answers = dataset(3)
    t = serve(answers)
    status, _, body = post(t.base_url, ask("Question number 1: what is 1 plus 1?"))
    data = json.loads(body)
    assert status == 200 and data["choices"][0]["message"]["content"] == "1 plus 1 is 2."
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 6 and data["usage"]["prompt_tokens"] > 0
    status, _, body = post(t.base_url, ask("  QUESTION number 2:   what is 2 PLUS 2? "))
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "2 plus 2 is 4."
    assert dict(t.answered) == {"p1": 1, "p2": 1}
    models = json.loads(urllib.request.urlopen(t.base_url + "/models").read())
    assert models["data"][0]["id"] == "reference-teacher"


def test_unknown_prompt_is_a_404_openai_error(dataset, serve):
    _, answers = dataset(2)
    t = serve(answers)
    status, _, body = post(t.base_url, ask("something nobody asked"))
    err = json.loads(body)["error"]
    assert status == 404 and err["code"] == "unknown_prompt" and "something nobody asked" in err["message"]
    assert sum(t.answered.values()) == 0


def test_max_tokens_truncates_and_streaming_reports_usage(dataset, serve):
    _, answers = dataset(2)
    t = serve(answers)
    status, _, body = post(t.base_url, ask("Question number 1: what is 1 plus 1?", max_tokens=2))
    data = json.loads(body)
    assert data["choices"][0]["message"]["content"] == "1 plus" and data["choices"][0]["finish_reason"] == "length"
    status, headers, body = post(t.base_url, ask("Question number 1: what is 1 plus 1?", stream=True, stream_options={"include_usage": True}))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "1 plus 1 is 2."
    assert chunks[-1]["usage"]["completion_tokens"] == 6 and chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_injected_429_carries_retry_after_and_rate_limit_enforced(dataset, serve):
    _, answers = dataset(2)
    t = serve(answers, faults={"rate_429": 1.0, "retry_after_s": 0.25})
    status, headers, body = post(t.base_url, ask("Question number 1: what is 1 plus 1?"))
    assert status == 429 and headers["Retry-After"] == "0.250" and headers["retry-after-ms"] == "250"
    t2 = serve(answers, faults={"max_rps": 2, "burst_s": 1.0})
    codes = [post(t2.base_url, ask("Question number 1: what is 1 plus 1?"))[0] for _ in range(4)]
    assert codes[:2] == [200, 200] and 429 in codes[2:]
    assert t2.faults["rate_limited"] >= 1


def test_malformed_and_500_faults(dataset, serve):
    _, answers = dataset(2)
    t = serve(answers, faults={"rate_malformed": 1.0})
    status, _, body = post(t.base_url, ask("Question number 1: what is 1 plus 1?"))
    assert status == 200
    try:
        json.loads(body)
        raise AssertionError("malformed body parsed")
    except json.JSONDecodeError:
        pass
    t = serve(answers, faults={"rate_500": 1.0})
    assert post(t.base_url, ask("Question number 1: what is 1 plus 1?"))[0] == 500
    assert sum(t.answered.values()) == 0


def test_idempotency_key_replays_without_billing_twice(dataset, serve):
    _, answers = dataset(2)
    t = serve(answers)
    a = post(t.base_url, ask("Question number 1: what is 1 plus 1?"), {"Idempotency-Key": "k1"})
    b = post(t.base_url, ask("Question number 1: what is 1 plus 1?"), {"Idempotency-Key": "k1"})
    assert json.loads(a[2])["id"] == json.loads(b[2])["id"]
    assert t.answered["p1"] == 1 and t.idempotent_replays == 1
