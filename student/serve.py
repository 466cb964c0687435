"""OpenAI-compatible HTTP server over any saved student (/v1/chat/completions, /v1/models).

The eval stage measures the student's latency through litellm exactly as it measures the
teacher, so per-request overhead matters: a threaded stdlib server (no framework import cost),
TCP_NODELAY (headers and body are separate writes; Nagle + delayed ACK would add ~40 ms), HTTP/1.1
keep-alive, and one model instance fed by a micro-batcher thread: requests that arrive while a
batch runs are predicted together in the next one, so concurrency raises throughput without
adding latency when idle. The model is only touched from that one thread (HF fast tokenizers
raise "Already borrowed" under concurrent use).
"""
from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from student.base import Student


class _Batcher:
    def __init__(self, student: Student, max_batch: int = 64, scored: bool = False):
        self.student, self.max_batch = student, max_batch
        self.scored = scored  # predict_scored: answers with their confidence (the cascade, serving/cascade.py)
        self.q: queue.Queue = queue.Queue()
        self.count_tokens = _token_counter(student)
        self.thread = threading.Thread(target=self._run, name="student-batcher", daemon=True)
        self.thread.start()

    def submit(self, messages: list[dict], tools: list[dict] | None = None) -> Future:
        fut: Future = Future()
        self.q.put(((messages, tools), fut))
        return fut

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            items = [item]
            while len(items) < self.max_batch:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.q.put(None)  # finish this batch, then stop
                    break
                items.append(nxt)
            try:
                batch = [m for (m, _), _ in items]
                # a student trained with tools reads each request's own (student/toolcall_format.py)
                kw = {"tools": [t for (_, t), _ in items]} if getattr(self.student, "accepts_tools", False) else {}
                if self.scored:
                    pairs = self.student.predict_scored(batch, **kw)  # type: ignore[attr-defined]
                    outs, confs = [t for t, _ in pairs], [c for _, c in pairs]
                else:
                    outs, confs = self.student.predict(batch, **kw), [None] * len(items)
                prompts = ["\n".join(str(x.get("content") or "") for x in m) for m in batch]
                counts = self.count_tokens(prompts + outs)
                for i, (_, fut) in enumerate(items):
                    fut.set_result((outs[i], counts[i], counts[len(items) + i], confs[i]))
            except Exception as e:  # one bad batch must not kill the server
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(e)


def _token_counter(student: Any):
    if hasattr(student, "count_tokens"):
        return student.count_tokens
    tok = getattr(student, "tokenizer", None) or getattr(student, "tok", None)  # the causal LM keeps its tokenizer as .tok
    if tok is not None:
        return lambda texts: [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]
    return lambda texts: [len(t.split()) for t in texts]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: litellm/openai reuse connections
    disable_nagle_algorithm = True
    server: "_Server"
    tools: list[dict] | None = None  # the current request's tools (canonical), set by do_POST

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # per-request stderr logging costs time on the measured path

    # ---- plumbing
    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, typ: str = "invalid_request_error", code: str | None = None) -> None:
        self._send_json(status, {"error": {"message": message, "type": typ, "param": None, "code": code}})

    def _authorized(self) -> bool:
        key = self.server.api_key
        if not key:
            return True
        if self.headers.get("Authorization", "") == f"Bearer {key}":
            return True
        self._error(401, "Incorrect or missing API key (send Authorization: Bearer <key>).", "invalid_request_error", "invalid_api_key")
        return False

    def _read_body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw or b"null")

    # ---- routes
    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/health", "/v1/health"):
            return self._send_json(200, {"status": "ok"})
        if not self._authorized():
            return
        if path == "/v1/models":
            return self._send_json(200, {"object": "list", "data": [self.server.model_card()]})
        if path.startswith("/v1/models/"):
            return self._send_json(200, self.server.model_card())
        self._error(404, f"unknown path {self.path}", code="not_found")

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_body()
        except (ValueError, UnicodeDecodeError):
            body = None
            bad_json = True
        else:
            bad_json = False
        if not self._authorized():
            return
        if path != "/v1/chat/completions":
            return self._error(404, f"unknown path {self.path}", code="not_found")
        if bad_json or not isinstance(body, dict):
            return self._error(400, "request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return self._error(400, "'messages' must be a non-empty list of {role, content} objects")
        try:
            messages, self.tools = _tool_request(body, messages)
        except ValueError as e:
            return self._error(400, str(e))
        self._complete(body, messages)

    def _complete(self, body: dict, messages: list[dict]) -> None:
        """Answer a valid request with the student (serving/cascade.py overrides this)."""
        t0 = time.perf_counter()
        try:
            text, p_tok, c_tok, _ = self.server.batcher.submit(messages, self.tools).result(timeout=self.server.request_timeout_s)
        except Exception as e:
            return self._error(500, f"student prediction failed: {type(e).__name__}: {e}", "server_error")
        self._respond(body, text, p_tok, c_tok, extra={"student_latency_ms": round((time.perf_counter() - t0) * 1000, 3)})

    def _respond(self, body: dict, text: str, p_tok: int, c_tok: int, *, model: str | None = None, extra: dict | None = None,
                 headers: dict[str, str] | None = None, answer: tuple[str | None, list[dict] | None] | None = None) -> None:
        """The chat.completion (or its SSE stream, when the request asks) carrying `text`; `extra`
        adds top-level body fields, `headers` response headers. `model` defaults to the request's.
        `answer`: (content, canonical calls) already decoded (the cascade's teacher answers)."""
        model = model or body.get("model") or self.server.model_name
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        usage = {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}
        content, calls = answer if answer is not None else self.server.decode_answer(text)
        if calls and body.get("tool_choice") == "none":  # the client asked for text (not enforced in decoding: the answer as text)
            content, calls = text, None
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self._stream(cid, created, model, content, usage if include_usage else None, headers, calls)
        from core.toolcall_render import assistant_message, finish_reason

        self._send_json(200, {
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {**assistant_message(content, calls), "refusal": None},
                         "logprobs": None, "finish_reason": finish_reason(calls)}],
            "usage": usage, "system_fingerprint": self.server.fingerprint, **(extra or {}),
        }, headers)

    def _stream(self, cid: str, created: int, model: str, text: str | None, usage: dict | None, headers: dict[str, str] | None = None,
                calls: list[dict] | None = None) -> None:
        """SSE over chunked transfer encoding (keep-alive safe): role, content, finish, [usage], [DONE].
        The whole answer is one content chunk: a classifier has no partial output. Tool calls come
        as OpenAI streams them: per call a delta with its index, id, type and name, then one with
        its arguments; finish_reason "tool_calls"."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model, "system_fingerprint": self.server.fingerprint}
        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        events = [chunk({"role": "assistant", "content": None if calls and not text else ""})]
        if text:
            events.append(chunk({"content": text}))
        if calls:
            from core.toolcall_render import render_tool_calls

            for i, c in enumerate(render_tool_calls(calls)):
                events.append(chunk({"tool_calls": [{"index": i, "id": c["id"], "type": "function", "function": {"name": c["function"]["name"], "arguments": ""}}]}))
                events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": c["function"]["arguments"]}}]}))
        events.append(chunk({}, "tool_calls" if calls else "stop"))
        if usage is not None:
            events.append({**base, "choices": [], "usage": usage})
        payload = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        data = payload.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")


def _tool_request(body: dict, messages: list[dict]) -> tuple[list[dict], list[dict] | None]:
    """(the messages as the student reads them, the request's canonical tools or None); ValueError
    (a 400) naming what is malformed. Assistant tool calls and tool results are kept, canonical
    (core/toolcalls.py), so a conversation that already called tools reads as it did for the teacher."""
    from core.toolcalls import ToolCallError, normalize_tool_turns, normalize_tools

    try:
        tools = normalize_tools(body.get("tools"), body.get("functions"))
        if not any(m.get("tool_calls") or m.get("function_call") or m.get("role") in ("tool", "function") for m in messages):
            return [{"role": m.get("role"), "content": _text(m.get("content"))} for m in messages], tools
        turns = normalize_tool_turns([{**m, "content": m.get("content") if m.get("content") is None else _text(m.get("content"))} for m in messages])
    except ToolCallError as e:
        raise ValueError(str(e)) from None
    return [{k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")} for m in turns], tools


def _text(content: Any) -> str:
    """OpenAI content may be a string or a list of parts; the student reads text only."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # eval fires many concurrent requests; the default 5 drops SYNs

    handler: type[BaseHTTPRequestHandler] = _Handler  # the cascade server's subclasses swap these (serving/cascade.py)
    scored = False

    def __init__(self, addr, student: Student, model_name: str, api_key: str | None):
        super().__init__(addr, self.handler)
        self.batcher = _Batcher(student, scored=self.scored)
        self.model_name, self.api_key = model_name, api_key
        self.request_timeout_s = 300.0
        self.fingerprint = f"fp_{getattr(student, 'kind', 'student')}"
        self.created = int(time.time())

    def decode_answer(self, text: str) -> tuple[str | None, list[dict] | None]:
        """(content, calls) of a student answer: calls only from a student trained with tools."""
        dec = getattr(self.batcher.student, "decode_answer", None)
        return dec(text) if dec is not None and getattr(self.batcher.student, "accepts_tools", False) else (text, None)

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "distill"}


class StudentServer:
    """`with StudentServer(path) as url:` or `.start()` -> "http://127.0.0.1:PORT/v1", `.stop()`."""

    def __init__(self, model_path: str | Path, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None,
                 model_name: str = "student", num_threads: int | None = None, fast_path: str | None = None,
                 engine: str | None = None):
        self.model_path, self.host, self.port, self.api_key, self.model_name = Path(model_path), host, port, api_key, model_name
        self.engine = engine  # "hf" | "llamacpp"; None = the engine recorded in student.json (student/engine.py)
        self.num_threads = num_threads  # torch threads; None = auto (idle cores, see student.threads.auto_threads)
        self.fast_path = fast_path  # one of fast_path.PATHS; None = the choice recorded in student.json (student/fast_path.py)
        self.served: str | None = None  # what start() loaded: "fp32", "int8", "onnx", "onnx_int8" (hf engine) or "llamacpp"
        self.student: Student | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{self._httpd.server_address[1]}/v1"

    def start(self) -> str:
        if self._httpd is not None:
            return self.base_url
        if self.student is None:
            import torch

            from student.threads import auto_threads

            # Process-wide, but this process serves the student: a one-query forward gains little
            # from a second thread and an oversubscribed one spins (latency spikes on a busy CPU).
            torch.set_num_threads(self.num_threads or auto_threads())
            from student.engine import load_served
            from student.fast_path import apply

            self.student, engine = load_served(self.model_path, self.engine, self.num_threads or auto_threads(),
                                               adaptive_threads=self.num_threads is None)
            self.served = apply(self.student, self.model_path, self.fast_path) if engine == "hf" else engine
        self._httpd = self._make_httpd()
        # The first call pays lazy init, not the first request - and it runs on the batcher's thread,
        # like every later call: an OpenMP runtime (llama.cpp's, torch's) binds a thread team to
        # the thread that first enters it, and a warm-up from this thread left llama.cpp's served
        # decoding 1.5x slower (NLU++ student, 2 threads: bench/serve_lm.py p50 410-438 vs 262 ms).
        self._httpd.batcher.submit([{"role": "user", "content": "warm up"}]).result(timeout=self._httpd.request_timeout_s)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="student-server", daemon=True)
        self._thread.start()
        return self.base_url

    def _make_httpd(self) -> _Server:
        return _Server((self.host, self.port), self.student, self.model_name, self.api_key)

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.batcher.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          allow_unauthenticated: bool = False, model_name: str = "student", num_threads: int | None = None,
          fast_path: str | None = None, engine: str | None = None) -> None:
    """Blocking server for `distill serve`; Ctrl-C stops it."""
    check_exposure(host, api_key, allow_unauthenticated)
    srv = StudentServer(model_path, host, port, api_key, model_name=model_name, num_threads=num_threads, fast_path=fast_path, engine=engine)
    run_until_interrupted(srv, lambda url: f"serving {model_path} ({srv.student.kind}, served: {srv.served}) at {url}"
                          + (" (bearer key required)" if api_key else ""))


def check_exposure(host: str, api_key: str | None, allow_unauthenticated: bool) -> None:
    """Without a key a server binds only a loopback address unless `allow_unauthenticated` says
    so: a student on 0.0.0.0 answers anyone (and a cascade spends the teacher's money for them)."""
    if not api_key and not allow_unauthenticated and not _is_loopback(host):
        from core.base import DistillError

        raise DistillError(f"refusing to serve on {host} without an API key: set DISTILL_SERVE_API_KEY, "
                           "bind 127.0.0.1, or pass --allow-unauthenticated to expose it anyway")


def run_until_interrupted(srv: "StudentServer", banner: Any) -> None:
    """Start `srv`, print `banner(url)`, serve until Ctrl-C, stop."""
    url = srv.start()
    print(banner(url), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
