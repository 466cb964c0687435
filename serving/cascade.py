"""Cascade serving: the student answers what it is sure of, the teacher the rest.

An OpenAI-compatible server (the student server of student/serve.py, same parsing, batching and
response shape) that scores every request with the student (`predict_scored`: calibrated
confidence) and:
- confidence >= threshold: the student's answer (`model` = the student's name);
- otherwise: forwarded to the teacher through teacher.client.TeacherClient (the replay's client:
  its limiter, retries and backoff), answered with the teacher's text (`model` = the teacher's),
  and the request + answer appended to a JSONL chat log that `ingest` reads, so the next run
  learns from exactly the requests the student was unsure of;
- teacher unreachable, failing or too slow: the student's answer, flagged (never a 500).
Who answered is in the `X-Distill-Answered-By` header (student | teacher | student-fallback) and
in the body's `distill` field; /v1/stats (also /metrics) returns the routing counters as JSON.

The teacher client runs on one asyncio loop in a background thread (TeacherClient is async and
not thread-safe); handler threads hand it coroutines and wait with a timeout.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from core.toolcall_render import render_messages
from student.serve import StudentServer, _Handler, _Server, check_exposure, run_until_interrupted

ANSWERED_BY = "X-Distill-Answered-By"


class CascadeRouter:
    """The routing state shared by the handler threads: threshold, teacher, forward log, counters."""

    def __init__(self, threshold: float, teacher: Any | None, *, forward_log: str | Path | None = None, teacher_timeout_s: float = 30.0,
                 temperature: float = 0.0, max_tokens: int = 256, teacher_messages: Callable[[list[dict]], list[dict]] | None = None):
        self.threshold = float(threshold)
        self.teacher = teacher  # a teacher.client.TeacherClient (or anything with its async complete())
        self.teacher_model = getattr(teacher, "model", None) or "teacher"
        self.forward_log = Path(forward_log) if forward_log else None
        self.teacher_timeout_s = teacher_timeout_s
        self.temperature, self.max_tokens = temperature, max_tokens
        self.teacher_messages = teacher_messages or (lambda m: m)  # e.g. add the teacher-only system prompt
        self.counts: Counter[str] = Counter()
        self.teacher_cost_usd = 0.0
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def start(self) -> None:
        if self._loop is not None:
            return
        if self.forward_log is not None:
            self.forward_log.parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cascade-teacher", daemon=True)
        self._thread.start()
        if self.teacher is not None:
            from core.llm import load_litellm

            load_litellm()  # 3-5 s import paid at start, not by the first forwarded request

    def stop(self) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = self._thread = None

    # ---- routing
    def count(self, key: str, cost: float = 0.0) -> None:
        with self._lock:
            self.counts[key] += 1
            self.teacher_cost_usd += cost

    def ask_teacher(self, messages: list[dict], body: dict, tools: list[dict] | None = None) -> tuple[dict | None, str | None]:
        """(teacher record, None) on an answer (text and/or canonical `tool_calls`), (None, why)
        when there is none to give. The request's tools and tool_choice go to the teacher as the
        replay sends them (the same ledger key)."""
        if self.teacher is None or self._loop is None:
            return None, "no teacher configured"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or self.max_tokens
        temperature = body.get("temperature")
        extra = {"tools": tools, **({"tool_choice": body["tool_choice"]} if body.get("tool_choice") is not None else {})} if tools else None
        coro = self.teacher.complete(render_messages(self.teacher_messages(messages)),
                                     temperature=self.temperature if temperature is None else float(temperature),
                                     max_tokens=int(max_tokens), extra=extra)
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            rec = fut.result(timeout=self.teacher_timeout_s)
        except TimeoutError:
            fut.cancel()
            return None, f"teacher did not answer within {self.teacher_timeout_s:g} s"
        except Exception as e:  # TeacherUnreachable, a rejected key, ...: the student answers instead
            return None, f"{type(e).__name__}: {str(e)[:300]}"
        if rec is None or rec.get("status") != "ok" or (rec.get("response") is None and not rec.get("tool_calls")):
            return None, (rec or {}).get("error") or "teacher returned no answer"
        return rec, None

    def log_forwarded(self, messages: list[dict], answer: str | None, *, confidence: float | None, student_answer: str | None,
                      tool_calls: list[dict] | None = None, tools: list[dict] | None = None, tool_choice: Any = None) -> None:
        """One line in the chat-log shape ingest's jsonl source reads (the answer is the final
        assistant turn, with its tool calls; the request's tools beside the messages); O_APPEND +
        one write per line, so concurrent handlers never interleave."""
        if self.forward_log is None:
            return
        last = {"role": "assistant", "content": answer, **({"tool_calls": tool_calls} if tool_calls else {})}  # canonical
        turns = render_messages([*messages, last])
        row = {"id": f"cascade-{uuid.uuid4().hex}", "messages": turns,
               **({"tools": tools} if tools else {}), **({"tool_choice": tool_choice} if tools and tool_choice is not None else {}),
               "model": self.teacher_model, "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
               "metadata": {"source": "cascade", "confidence": confidence, "threshold": self.threshold, "student_answer": student_answer}}
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._log_lock, open(self.forward_log, "a", encoding="utf-8") as f:
            f.write(line)
        self.count("logged")

    def stats(self) -> dict[str, Any]:
        with self._lock:
            c = dict(self.counts)
            cost = self.teacher_cost_usd
        total = c.get("requests", 0)
        return {"threshold": self.threshold, "requests": total, "answered_by_student": c.get("student", 0),
                "forwarded": c.get("forwarded", 0), "answered_by_teacher": c.get("teacher", 0),
                "student_fallback": c.get("student-fallback", 0), "student_errors": c.get("student_error", 0),
                "logged": c.get("logged", 0), "teacher_cost_usd": round(cost, 8),
                "student_share": round(c.get("student", 0) / total, 6) if total else None,
                "teacher_model": self.teacher_model, "forward_log": str(self.forward_log) if self.forward_log else None}


class _CascadeHandler(_Handler):
    server: "_CascadeHTTPServer"

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/stats", "/metrics"):
            if self._authorized():
                self._send_json(200, self.server.router.stats())
            return
        super().do_GET()

    def _complete(self, body: dict, messages: list[dict]) -> None:
        router, srv = self.server.router, self.server
        router.count("requests")
        t0 = time.perf_counter()
        try:
            text, p_tok, c_tok, conf = srv.batcher.submit(messages, self.tools).result(timeout=srv.request_timeout_s)
        except Exception as e:  # the student failed: the teacher can still answer
            text, p_tok, c_tok, conf, student_error = None, 0, 0, None, f"{type(e).__name__}: {e}"
            router.count("student_error")
        else:
            student_error = None
        info = {"confidence": conf, "threshold": router.threshold}
        if conf is not None and conf >= router.threshold:
            router.count("student")
            return self._answer(body, text, p_tok, c_tok, srv.model_name, "student", info, t0)
        router.count("forwarded")
        rec, why = router.ask_teacher(messages, body, self.tools)
        if rec is not None:
            router.count("teacher", rec.get("cost_usd") or 0.0)
            calls = rec.get("tool_calls") or None
            router.log_forwarded(messages, rec["response"], confidence=conf, student_answer=text, tool_calls=calls,
                                 tools=self.tools, tool_choice=body.get("tool_choice"))
            return self._answer(body, rec["response"] or "", rec.get("prompt_tokens", 0), rec.get("completion_tokens", 0),
                                router.teacher_model, "teacher", info, t0, answer=(rec["response"], calls))
        if text is None:  # neither could answer: say both reasons (a 502 with a body, not an empty 500)
            return self._error(502, f"student failed ({student_error}) and the teacher did not answer ({why})", "server_error")
        router.count("student-fallback")
        self._answer(body, text, p_tok, c_tok, srv.model_name, "student-fallback", {**info, "fallback": True, "teacher_error": why}, t0)

    def _answer(self, body: dict, text: str, p_tok: int, c_tok: int, model: str, by: str, info: dict, t0: float,
                answer: tuple[str | None, list[dict] | None] | None = None) -> None:
        ms = round((time.perf_counter() - t0) * 1000, 3)
        headers = {ANSWERED_BY: by}
        if info.get("confidence") is not None:
            headers["X-Distill-Confidence"] = f"{info['confidence']:.6f}"
        extra = {"distill": {"answered_by": by, "fallback": by == "student-fallback", **info}, "latency_ms": ms}
        self._respond(body, text, p_tok, c_tok, model=model, extra=extra, headers=headers, answer=answer)


class _CascadeHTTPServer(_Server):
    handler = _CascadeHandler
    scored = True

    def __init__(self, addr, student: Any, model_name: str, api_key: str | None, router: CascadeRouter):
        super().__init__(addr, student, model_name, api_key)
        self.router = router
        self.fingerprint = f"fp_cascade_{getattr(student, 'kind', 'student')}"


class CascadeServer(StudentServer):
    """`with CascadeServer(model_path, threshold, teacher_client, forward_log=...) as url:`
    -> "http://127.0.0.1:PORT/v1"; `.router.stats()` for the counters. `teacher` is a
    teacher.client.TeacherClient (e.g. teacher.from_config.build_client(cfg, None, n)) or None
    (every uncertain request then gets the flagged student answer)."""

    def __init__(self, model_path: str | Path, threshold: float, teacher: Any | None, *, forward_log: str | Path | None = None,
                 teacher_timeout_s: float = 30.0, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 model_name: str = "student", num_threads: int | None = None, max_tokens: int = 256, temperature: float = 0.0,
                 teacher_messages: Callable[[list[dict]], list[dict]] | None = None):
        super().__init__(model_path, host, port, api_key, model_name, num_threads)
        self.router = CascadeRouter(threshold, teacher, forward_log=forward_log, teacher_timeout_s=teacher_timeout_s,
                                    temperature=temperature, max_tokens=max_tokens, teacher_messages=teacher_messages)

    def start(self) -> str:
        self.router.start()
        url = super().start()
        if not hasattr(self.student, "predict_scored"):
            self.stop()
            raise TypeError(f"{self.model_path}: a {getattr(self.student, 'kind', '?')} student has no predict_scored(): it cannot serve a cascade")
        return url

    def _make_httpd(self) -> _Server:
        return _CascadeHTTPServer((self.host, self.port), self.student, self.model_name, self.api_key, self.router)

    def stop(self) -> None:
        super().stop()
        self.router.stop()


def serve_cascade(model_path: str | Path, threshold: float, teacher: Any | None, *, host: str = "127.0.0.1", port: int = 8000,
                  api_key: str | None = None, allow_unauthenticated: bool = False, **kw: Any) -> None:
    """Blocking cascade server for `distill serve --cascade`; Ctrl-C stops it. Like the plain
    server it binds a non-loopback address without a key only when told to."""
    check_exposure(host, api_key, allow_unauthenticated)
    srv = CascadeServer(model_path, threshold, teacher, host=host, port=port, api_key=api_key, **kw)
    run_until_interrupted(srv, lambda url: f"serving {model_path} as a cascade at {url} (threshold {threshold:.4g}, teacher "
                          f"{srv.router.teacher_model}, forward log {srv.router.forward_log})")
