"""The embedded reference teacher: a local OpenAI-compatible server answering from a JSONL file.

It stands in for a hosted model in offline demos and tests: /v1/chat/completions (usage tokens,
finish_reason, optional SSE streaming with stream_options.include_usage), /v1/models, and the
Batch API (/v1/files, /v1/batches; see batch_api.py). It can inject faults (429 + Retry-After,
500, hangs past the client's timeout, malformed bodies), lognormal latency, and enforce its own
requests/s limit, so the replay's retry and crash-recovery paths are tested against real HTTP.

Matching: the last user turn exactly, then normalised (lowercase, collapsed whitespace); rows
that name their tool set ("tools") answer only requests declaring that set. A row with
"tool_calls" answers with them (OpenAI `tool_calls`, finish_reason "tool_calls") when the
request declares the tools they call.
Token counts are approximate (see textutil.approx_tokens).

Billing model (what tests assert on): `answered[id]` counts answers delivered for a prompt. A
request carrying an `Idempotency-Key` already answered gets the stored answer again and is not
billed twice (counted in `idempotent_replays`), like providers that honour idempotency keys;
with `honour_idempotency_key: false` the key is ignored and every answer is billed, like the
large providers' chat completions.
aiohttp on one background event loop sustains well over 300 req/s on 2 cores.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import threading
import time
import uuid
from collections import Counter, deque
from aiohttp import web

from core.base import DistillError
from core.toolcalls import calls_text
from core.toolcall_render import assistant_message
from teacher.reference.config import ReferenceTeacherConfig
from teacher.reference.answers import load_answer_index, load_answers, tool_set_names  # noqa: F401  (load_answers: re-exported)
from teacher.textutil import approx_tokens, last_user_text, messages_tokens, normalise, truncate_tokens


class _Bucket:
    """Server-side token bucket (the limit it enforces); not thread-safe, used on the server loop only."""

    def __init__(self, rate: float, burst_s: float):
        self.rate, self.cap = rate, max(1.0, rate * burst_s)
        self.tokens, self.t = self.cap, time.monotonic()

    def take(self) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.cap, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _error(status: int, message: str, etype: str, code: str | None = None, headers: dict | None = None) -> web.Response:
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class ReferenceTeacher:
    """`with ReferenceTeacher(cfg) as url:` or `.start() -> "http://127.0.0.1:PORT/v1"`, `.stop()`."""

    def __init__(self, cfg: ReferenceTeacherConfig):
        if not cfg.answers:
            raise DistillError("teacher.reference_server.answers: set the reference answers JSONL")
        self.cfg = cfg
        self.exact, self.norm, self.by_tools = load_answer_index(cfg.answers)
        self.rng = random.Random(cfg.faults.seed)
        self.bucket = _Bucket(cfg.faults.max_rps, cfg.faults.burst_s) if cfg.faults.max_rps else None
        self.answered: Counter[str] = Counter()  # prompt id -> answers delivered (billed)
        self.faults: Counter[str] = Counter()  # injected fault kind -> count
        self.requests = 0
        self.idempotent_replays = 0
        self.recent_bodies: deque[dict] = deque(maxlen=64)  # the last chat request bodies, for tests to see what was sent
        self._idem: dict[str, tuple[str, dict]] = {}  # Idempotency-Key -> (prompt id, answer body)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.base_url: str | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=512 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        from teacher.reference.batch_api import add_batch_routes

        add_batch_routes(app, self)
        return app

    async def _start_async(self) -> str:
        # A short shutdown_timeout so stop() does not wait on injected hangs.
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.host, self.cfg.port, backlog=1024)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://{self.cfg.host}:{port}/v1"
        return self.base_url

    def start(self) -> str:
        if self._thread is not None:
            return self.base_url  # type: ignore[return-value]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="reference-teacher", daemon=True)
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self._start_async(), self._loop).result(30)
        except OSError as e:
            self.stop()
            raise DistillError(f"reference teacher cannot listen on {self.cfg.host}:{self.cfg.port}: {e}") from None

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            except Exception:  # best effort: the loop is stopped below either way
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Blocking serve (the CLI's `distill teacher serve`); Ctrl-C stops it."""
        url = self.start()
        print(f"READY {url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # ---- counters for tests -------------------------------------------------------------------
    def stats(self) -> dict:
        return {"requests": self.requests, "answered": sum(self.answered.values()), "unique_answered": len(self.answered),
                "max_answers_per_prompt": max(self.answered.values(), default=0), "faults": dict(self.faults),
                "idempotent_replays": self.idempotent_replays}

    # ---- answering ----------------------------------------------------------------------------
    def lookup(self, messages: list[dict], tools: list | None = None) -> dict | None:
        user = last_user_text(messages)
        if user is None:
            return None
        names = tool_set_names(tools)
        if names and self.by_tools:
            hit = self.by_tools.get((normalise(user), names))
            if hit is not None:
                return hit
        return self.exact.get(user) or self.norm.get(normalise(user))

    def completion_body(self, body: dict) -> tuple[int, dict, str | None]:
        """(status, payload, prompt id) for a chat request body; shared by online and batch paths."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return 400, {"error": {"message": "'messages' must be a non-empty list", "type": "invalid_request_error", "param": "messages", "code": None}}, None
        tools = body.get("tools")
        entry = self.lookup(messages, tools)
        if entry is None:
            snippet = (last_user_text(messages) or "")[:80]
            return 404, {"error": {"message": f"reference teacher has no answer for this prompt (last user turn {snippet!r})",
                                   "type": "invalid_request_error", "param": "messages", "code": "unknown_prompt"}}, None
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 1 << 30
        calls = self._calls(entry, tools, body.get("tool_choice"))
        if calls:
            # Calls are answered whole (a model cut mid-call returns unparsable arguments; the
            # truncation filter drops such answers by finish_reason anyway).
            message = assistant_message(entry["response"] or None, calls)
            text, ctoks, cut = message["content"], approx_tokens(entry["response"]) + approx_tokens(calls_text(calls)), False
            finish = "tool_calls"
        else:
            text, ctoks, cut = truncate_tokens(entry["response"], int(max_tokens))
            message, finish = {"role": "assistant", "content": text}, "length" if cut else "stop"
        n = int(body.get("n") or 1)
        choices = [{"index": i, "message": dict(message), "finish_reason": finish, "logprobs": None} for i in range(n)]
        ptoks = messages_tokens(messages) + (approx_tokens(json.dumps(tools)) if tools else 0)
        payload = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                   "model": body.get("model") or self.cfg.model_name, "choices": choices,
                   "usage": {"prompt_tokens": ptoks, "completion_tokens": ctoks * n, "total_tokens": ptoks + ctoks * n}}
        return 200, payload, entry["id"]

    @staticmethod
    def _calls(entry: dict, tools: list | None, tool_choice) -> list[dict] | None:
        """The reference calls, when the request lets the model make them: it declares every tool
        they name, and tool_choice is not "none" (a model cannot call what it was not given)."""
        calls = entry.get("tool_calls")
        if not calls or tool_choice == "none":
            return None
        declared = set(tool_set_names(tools) or ())
        return calls if all(c["name"] in declared for c in calls) else None

    def _latency(self) -> float:
        mean = self.cfg.latency_ms / 1000.0
        if mean <= 0:
            return 0.0
        s = self.cfg.latency_sigma
        if s <= 0:
            return mean
        # lognormal with the configured mean: mu = ln(mean) - s^2/2
        return self.rng.lognormvariate(math.log(mean) - s * s / 2, s)

    def _draw_fault(self) -> str | None:
        f, r = self.cfg.faults, self.rng.random()
        for kind, rate in (("429", f.rate_429), ("500", f.rate_500), ("timeout", f.rate_timeout), ("malformed", f.rate_malformed)):
            if r < rate:
                return kind
            r -= rate
        return None

    def _retry_headers(self, seconds: float) -> dict:
        return {"Retry-After": f"{seconds:.3f}", "retry-after-ms": str(int(math.ceil(seconds * 1000)))}

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.cfg.model_name, "object": "model", "created": 0, "owned_by": "distill"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.cfg.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.cfg.api_key.get_secret_value()}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body is not an object")
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, f"request body is not valid JSON: {e}", "invalid_request_error")
        self.recent_bodies.append(body)
        if self.bucket is not None:
            wait = self.bucket.take()
            if wait > 0:
                self.faults["rate_limited"] += 1
                return _error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", self._retry_headers(wait))
        key = request.headers.get("Idempotency-Key") if self.cfg.honour_idempotency_key else None
        if key and key in self._idem:
            self.idempotent_replays += 1
            return await self._deliver(request, body, self._idem[key][1], None, None)
        fault = self._draw_fault()
        if fault == "429":
            self.faults[fault] += 1
            return _error(429, "Rate limit reached (injected)", "requests", "rate_limit_exceeded", self._retry_headers(self.cfg.faults.retry_after_s))
        await asyncio.sleep(self._latency())
        if fault == "500":
            self.faults[fault] += 1
            return _error(500, "The server had an error while processing your request (injected)", "server_error")
        if fault == "timeout":
            # Hang past the client's timeout, then give up without an answer (never billed).
            self.faults[fault] += 1
            await asyncio.sleep(self.cfg.faults.hang_s)
            return _error(504, "upstream timed out (injected)", "server_error")
        if fault == "malformed":
            self.faults[fault] += 1
            return web.Response(status=200, body=b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mess',
                                content_type="application/json")
        status, payload, pid = self.completion_body(body)
        if status != 200:
            return web.json_response(payload, status=status)
        return await self._deliver(request, body, payload, pid, key)

    async def _deliver(self, request: web.Request, body: dict, payload: dict, pid: str | None, key: str | None) -> web.StreamResponse:
        """Write the answer, and bill it only if the client was still there to receive it."""
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # client gone (e.g. timed out): nothing delivered
        # Count before writing so a client that has read its answer always sees it counted;
        # un-count if the write fails (the client vanished mid-answer).
        if pid is not None:
            self.answered[pid] += 1
        try:
            if body.get("stream"):
                resp = await self._stream(request, body, payload)
            else:
                resp = web.Response(body=json.dumps(payload).encode(), content_type="application/json")
                await resp.prepare(request)
                await resp.write_eof()
        except (ConnectionError, RuntimeError):
            if pid is not None:
                self.answered[pid] -= 1
            raise
        if pid is not None and key:
            self._idem[key] = (pid, payload)
        return resp

    async def _stream(self, request: web.Request, body: dict, payload: dict) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"], "model": payload["model"]}

        async def send(obj: dict | str) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            await resp.write(f"data: {data}\n\n".encode())

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        for ch in payload["choices"]:
            i = ch["index"]
            await send({**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
            if ch["message"].get("tool_calls"):
                # Each call in one delta (OpenAI's chunks split the arguments; clients join them either way).
                deltas = [{**c, "index": j} for j, c in enumerate(ch["message"]["tool_calls"])]
                await send({**base, "choices": [{"index": i, "delta": {"tool_calls": deltas}, "finish_reason": None}]})
            words = ch["message"]["content"].split(" ") if ch["message"]["content"] is not None else []
            for j, w in enumerate(words):
                piece = w if j == 0 else " " + w
                await send({**base, "choices": [{"index": i, "delta": {"content": piece}, "finish_reason": None}]})
            await send({**base, "choices": [{"index": i, "delta": {}, "finish_reason": ch["finish_reason"]}]})
        if include_usage:
            await send({**base, "choices": [], "usage": payload["usage"]})
        await send("[DONE]")
        await resp.write_eof()
        return resp


def main(argv: list[str] | None = None) -> int:
    """`python -m teacher.server --answers FILE [--port N] [--latency-ms X] [--config-json '{...}']`.

    Prints `READY <base_url>` on stdout once listening (tests and the bench wait for that line).
    """
    ap = argparse.ArgumentParser(prog="teacher.reference.server", description=__doc__.splitlines()[0])
    ap.add_argument("--config-json", help="A full ReferenceTeacherConfig as JSON (other flags override it).")
    ap.add_argument("--answers")
    ap.add_argument("--port", type=int)
    ap.add_argument("--latency-ms", type=float)
    ap.add_argument("--stdin-control", action="store_true", help="Serve until stdin closes; a 'stats' line prints counters as JSON.")
    args = ap.parse_args(argv)
    data = json.loads(args.config_json) if args.config_json else {}
    for k in ("answers", "port", "latency_ms"):
        if getattr(args, k) is not None:
            data[k] = getattr(args, k)
    cfg = ReferenceTeacherConfig.model_validate(data)
    teacher = ReferenceTeacher(cfg)
    if not args.stdin_control:
        teacher.serve_forever()
        return 0
    url = teacher.start()
    print(f"READY {url}", flush=True)
    try:
        for line in sys.stdin:  # serve until stdin closes (the parent exited) or Ctrl-C
            if line.strip() == "stats":
                stats = {**teacher.stats(), "answered_by_id": dict(teacher.answered)}
                print("STATS " + json.dumps(stats), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        teacher.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
