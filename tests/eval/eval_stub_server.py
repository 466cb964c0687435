"""A tiny OpenAI-compatible chat server for eval tests (real HTTP on 127.0.0.1, stdlib only).

answer(messages) -> str decides the reply. Supports stream=True (SSE, include_usage) unless
refuse_stream; delay_s adds latency per request. Counts requests so tests can assert on them.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubServer:
    def __init__(self, answer: Callable[[list[dict]], str], delay_s: float = 0.0, refuse_stream: bool = False, model: str = "stub"):
        self.answer, self.delay_s, self.refuse_stream, self.model = answer, delay_s, refuse_stream, model
        self.requests = 0
        self.streamed = 0
        self._lock = threading.Lock()
        stub = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # keep test output quiet
                pass

            def _json(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._json(200, {"object": "list", "data": [{"id": stub.model, "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    stub.requests += 1
                if stub.delay_s:
                    time.sleep(stub.delay_s)
                if body.get("stream") and stub.refuse_stream:
                    return self._json(400, {"error": {"message": "streaming not supported", "type": "invalid_request_error"}})
                text = stub.answer(body["messages"])
                pt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
                ct = max(1, len(text.split()))
                usage = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
                base = {"id": "chatcmpl-stub", "created": int(time.time()), "model": body.get("model", stub.model)}
                if not body.get("stream"):
                    return self._json(200, {**base, "object": "chat.completion", "usage": usage, "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}]})
                with stub._lock:
                    stub.streamed += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                pieces = [text[i:i + 8] for i in range(0, len(text), 8)] or [""]
                chunks = [{"index": 0, "delta": {"role": "assistant", "content": p}, "finish_reason": None} for p in pieces]
                chunks.append({"index": 0, "delta": {}, "finish_reason": "stop"})
                for c in chunks:
                    self.wfile.write(f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [c]})}\n\n".encode())
                if (body.get("stream_options") or {}).get("include_usage"):
                    self.wfile.write(f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
