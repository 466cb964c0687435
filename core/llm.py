"""The one LLM call path: the only module that imports litellm. Teacher replay (through
teacher.client.TeacherClient, which adds the ledger, limiter and retries), eval predictions and
latency probes, the pairwise judge and the filter judge all call models through here.

OpenAI-compatible endpoints ("openai/<name>" + api_base) are called through the openai SDK on
aiohttp instead (uses_fast: ~3x litellm's requests/s per core); the rest of this module treats
both the same (parse_response, classify, Pricer).

    ep = Endpoint("openai/gpt-4o-mini", api_base=None, api_key=None, max_tokens=64)
    resp = await acompletion(ep, messages)            # raises litellm's typed errors
    reply = await complete(ep, messages, stream=True) # never raises: Reply(ok, text, latency_ms, ttft_ms, tokens, error)
    classify(exc) -> Failure(reason, retry_after_s)   # on litellm's/openai's exception classes
    Pricer(model, in_cost, out_cost).cost(pt, ct)     # USD, None when unpriced; token_cost() for one-offs
    run_sync(coro)                                    # asyncio.run, also under a running loop

litellm is imported lazily (3-5 s), with its local price map (it never fetches one).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.openai_fast import fast_completion, uses_fast

DUMMY_API_KEY = "no-key"
BACKSTOP_S = 5.0  # on top of the request timeout, in case a client ignores its own timeout
RETRYABLE = frozenset({"rate_limited", "server_error", "timeout", "connection_error", "malformed_response"})


_litellm: Any = None


def load_litellm() -> Any:
    """litellm, imported on first use with the local price map (no network at import)."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        _litellm = litellm
    return _litellm


def api_key_for(model: str, api_base: str | None, api_key: str | None) -> str | None:
    """The key to send. The OpenAI client refuses to start without one even for a local
    OpenAI-compatible server that ignores it, so such endpoints get a dummy key unless the
    environment has a real one; None lets litellm read the provider's key from the environment."""
    if api_key:
        return api_key
    openai_style = model.startswith("openai/") or "/" not in model
    if api_base and openai_style and not os.environ.get("OPENAI_API_KEY"):
        return DUMMY_API_KEY
    return None


@dataclass
class Endpoint:
    """Where and how to call a model. `extra` passes through to litellm (tools, response_format,
    extra_headers...); max_retries are the HTTP client's own (0 for timing calls, where a silent
    retry would be timed as one slow request, and under TeacherClient, which retries itself)."""

    model: str
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    temperature: float | None = 0.0
    max_tokens: int | None = 256
    timeout_s: float = 60.0
    max_retries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    fast: bool | None = None  # the openai SDK on aiohttp instead of litellm; None = auto (see uses_fast)

    def kwargs(self, **overrides: Any) -> dict[str, Any]:
        """litellm.acompletion keyword arguments (all but the messages); overrides win."""
        kw: dict[str, Any] = {"model": self.model, "timeout": self.timeout_s, "max_retries": self.max_retries}
        if self.temperature is not None:
            kw["temperature"] = self.temperature
        if self.max_tokens is not None:
            kw["max_tokens"] = self.max_tokens
        if self.api_base:
            kw["api_base"] = self.api_base
        key = api_key_for(self.model, self.api_base, self.api_key)
        if key is not None:
            kw["api_key"] = key
        kw.update(self.extra)
        kw.update(overrides)
        return kw


async def acompletion(ep: Endpoint, messages: list[dict], **overrides: Any) -> Any:
    """One chat completion: the openai SDK on aiohttp for OpenAI-compatible endpoints (uses_fast),
    else litellm.acompletion; raises the SDK's / litellm's typed errors (see classify). Both give
    a response with .choices[i].message and .usage (or a stream of chunks)."""
    kw = ep.kwargs(**overrides)
    if uses_fast(ep):
        return await asyncio.wait_for(fast_completion(messages, kw), kw["timeout"] + BACKSTOP_S)
    litellm = load_litellm()
    if kw.get("tools"):
        # litellm routes any call with tools through its MCP gateway check, which imports the
        # optional `mcp` package (not installed): every tool-calling request would fail. We never
        # send MCP tools; the pinned litellm has this switch for callers that do not either.
        kw["_skip_mcp_handler"] = True
    return await asyncio.wait_for(litellm.acompletion(messages=messages, **kw), kw["timeout"] + BACKSTOP_S)


class MalformedResponse(Exception):
    """A 200 whose body parsed but carries no answer (classified as malformed_response)."""


@dataclass
class Parsed:
    samples: list[str | None]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    tool_calls: list[dict] | None = None


def parse_response(resp: Any) -> Parsed:
    """Answers (one per choice), finish reason and token usage of a non-streaming response."""
    choices = getattr(resp, "choices", None) or []
    if not choices:
        raise MalformedResponse("response has no choices")
    msg = choices[0].message
    calls = getattr(msg, "tool_calls", None)
    if getattr(msg, "content", None) is None and not calls:
        raise MalformedResponse("response has no content")
    usage = getattr(resp, "usage", None)
    return Parsed([getattr(c.message, "content", None) for c in choices], choices[0].finish_reason,
                  int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0),
                  [c.model_dump() if hasattr(c, "model_dump") else dict(c) for c in calls] if calls else None)


@dataclass
class Reply:
    """One call's outcome: text and usage, total latency, TTFT (streaming only), or the error."""

    ok: bool
    latency_ms: float
    ttft_ms: float | None = None
    text: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    reason: str | None = None  # classify()'s reason when not ok
    tool_calls: list[dict] | None = None


async def complete(ep: Endpoint, messages: list[dict], *, stream: bool = False, **overrides: Any) -> Reply:
    """Time one request end to end (with stream=True also the first chunk carrying content).
    Errors come back in the Reply, never raised: one failed item must not end an evaluation."""
    t0 = time.perf_counter()
    try:
        if not stream:
            p = parse_response(await acompletion(ep, messages, **overrides))
            return Reply(True, (time.perf_counter() - t0) * 1000, None, p.samples[0], p.prompt_tokens, p.completion_tokens,
                         tool_calls=p.tool_calls)
        resp = await acompletion(ep, messages, stream=True, stream_options={"include_usage": True}, **overrides)
        ttft, parts, pt, ct = None, [], 0, 0
        calls: dict[int, dict] = {}  # streamed tool calls by index: name and arguments arrive in pieces
        async for chunk in resp:
            if chunk.choices:
                delta = chunk.choices[0].delta
                piece = getattr(delta, "content", None)
                deltas = getattr(delta, "tool_calls", None)
                if (piece or deltas) and ttft is None:
                    ttft = (time.perf_counter() - t0) * 1000
                if piece:
                    parts.append(piece)
                for d in deltas or []:
                    c = calls.setdefault(getattr(d, "index", 0) or 0, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                    c["id"] = getattr(d, "id", None) or c["id"]
                    fn = getattr(d, "function", None)
                    c["function"]["name"] += getattr(fn, "name", None) or ""
                    c["function"]["arguments"] += getattr(fn, "arguments", None) or ""
            u = getattr(chunk, "usage", None)
            if u:
                pt = getattr(u, "prompt_tokens", 0) or pt
                ct = getattr(u, "completion_tokens", 0) or ct
        return Reply(True, (time.perf_counter() - t0) * 1000, ttft, "".join(parts), pt, ct,
                     tool_calls=[calls[k] for k in sorted(calls)] or None)
    except Exception as e:  # noqa: BLE001 - returned, see docstring
        f = classify(e)
        return Reply(False, (time.perf_counter() - t0) * 1000, error=f"{f.reason}: {short(e)}", reason=f.reason)


async def complete_many(ep: Endpoint, conversations: list[list[dict]], concurrency: int, *,
                        on_reply: Callable[[Reply], None] | None = None, **overrides: Any) -> list[Reply]:
    """complete() for each conversation, `concurrency` in flight, in input order; on_reply is
    called as each finishes (progress bars)."""
    out: list[Reply | None] = [None] * len(conversations)
    it = iter(range(len(conversations)))

    async def worker() -> None:
        for i in it:  # one shared iterator: each conversation is taken by exactly one worker
            out[i] = await complete(ep, conversations[i], **overrides)
            if on_reply is not None:
                on_reply(out[i])

    await asyncio.gather(*[worker() for _ in range(max(1, min(concurrency, len(conversations))))])
    return out  # type: ignore[return-value]


# --- errors -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    reason: str  # rate_limited | server_error | timeout | connection_error | malformed_response | http_<status> | error
    retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE


def _chain(e: BaseException) -> list[BaseException]:
    chain, cur = [], e
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


def classify(e: BaseException) -> Failure:
    """What went wrong with a call, from litellm's (and the openai SDK's) exception classes.

    The cause chain is checked first because litellm re-raises some transport failures under
    another class: a refused connection arrives as litellm.InternalServerError caused by
    openai.APIConnectionError, a truncated 200 body as InternalServerError caused by a
    JSONDecodeError; both would otherwise read as retryable 500s."""
    import openai  # litellm's classes subclass the SDK's; causes in the chain are the SDK's own

    chain = _chain(e)

    def caused_by(*types: type) -> bool:
        return any(isinstance(c, types) for c in chain)

    if caused_by(ConnectionRefusedError, ConnectionResetError):
        # Before the timeout check: httpx-aiohttp (the fast path's transport) files a refused
        # connection under httpx.ConnectTimeout, so the SDK raises APITimeoutError for it.
        return Failure("connection_error")
    if caused_by(TimeoutError, openai.APITimeoutError):  # litellm.Timeout subclasses APITimeoutError
        return Failure("timeout")
    if caused_by(MalformedResponse, json.JSONDecodeError):
        return Failure("malformed_response")
    if caused_by(openai.APIConnectionError, ConnectionError):
        return Failure("connection_error")
    litellm = _litellm  # an error from the fast path (openai SDK) needs no litellm import
    if litellm is None:
        return _by_status(e, openai)
    if isinstance(e, litellm.RateLimitError):
        return Failure("rate_limited", retry_after_s(e))
    if isinstance(e, (litellm.InternalServerError, litellm.ServiceUnavailableError, litellm.BadGatewayError)):
        return Failure("server_error")
    for cls, default in ((litellm.AuthenticationError, 401), (litellm.PermissionDeniedError, 403), (litellm.NotFoundError, 404),
                         (litellm.UnprocessableEntityError, 422), (litellm.BadRequestError, 400)):
        if isinstance(e, cls):  # a client error, not retried; litellm files some (a 404) under BadRequestError
            status = getattr(e, "status_code", None)
            return Failure(f"http_{status if isinstance(status, int) and 400 <= status < 500 else default}")
    return _by_status(e, openai, litellm.APIError)


def _by_status(e: BaseException, openai: Any, *api_errors: type) -> Failure:
    """A generic APIError / APIStatusError (the SDK's own on the fast path): by its status code."""
    if isinstance(e, openai.APIResponseValidationError):
        return Failure("malformed_response")
    status = getattr(e, "status_code", None) if isinstance(e, (openai.APIError, *api_errors)) else None
    if isinstance(status, int):  # a generic APIError / APIStatusError: go by its status code
        if status == 429:
            return Failure("rate_limited", retry_after_s(e))
        if status == 408:
            return Failure("timeout")
        return Failure("server_error" if status >= 500 else f"http_{status}")
    return Failure("error")


def retry_after_s(e: BaseException) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, retry-after in seconds or as an HTTP date)."""
    headers = getattr(e, "litellm_response_headers", None)
    if not headers and getattr(e, "response", None) is not None:
        headers = getattr(e.response, "headers", None)
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, AttributeError):  # unreadable: the caller backs off instead
        return None


def short(e: BaseException, n: int = 300) -> str:
    s = str(e).replace("\n", " ") or type(e).__name__
    return (s[:n] + "...") if len(s) > n else s


# --- prices -------------------------------------------------------------------------------

_registered: set[str] = set()  # models we put into litellm's map ourselves (they are not priced by it)


class Pricer:
    """Per-token prices of one model: custom prices win, else litellm's local price map; an
    unpriced model costs None (`priced` False) rather than pretending it was free. Batch mode
    uses the map's batch prices, else `batch_discount`. Rates are read once, not per request:
    litellm's cost functions cost ~0.1-1 ms of CPU a call, which shows at hundreds of req/s."""

    def __init__(self, model: str, input_cost_per_token: float | None = None, output_cost_per_token: float | None = None,
                 *, batch: bool = False, batch_discount: float = 0.5):
        self.model, self.batch, self.batch_discount = model, batch, batch_discount
        self.rates: tuple[float, float] | None
        if input_cost_per_token is not None or output_cost_per_token is not None:
            d = batch_discount if batch else 1.0
            self.rates = ((input_cost_per_token or 0.0) * d, (output_cost_per_token or 0.0) * d)
            self.source = "custom"
        else:
            self.rates = _map_rates(model, batch, batch_discount)
            self.source = "litellm" if self.rates else "unpriced"

    @property
    def priced(self) -> bool:
        return self.rates is not None

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float | None:
        if self.rates is None:
            return None
        return prompt_tokens * self.rates[0] + completion_tokens * self.rates[1]


def token_cost(model: str, prompt_tokens: float, completion_tokens: float,
               input_cost: float | None = None, output_cost: float | None = None) -> float | None:
    """USD for the given tokens (custom prices, else litellm's map); None when unpriced."""
    return Pricer(model, input_cost, output_cost).cost(prompt_tokens, completion_tokens)


def _map_rates(model: str, batch: bool, discount: float) -> tuple[float, float] | None:
    if model in _registered:
        return None
    litellm = load_litellm()
    try:
        info = litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - litellm raises a plain Exception for an unmapped model
        return None
    inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if inp is None and out is None:
        return None
    inp, out = float(inp or 0.0), float(out or 0.0)
    if batch:
        b_in, b_out = info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches")
        inp = float(b_in) if b_in is not None else inp * discount
        out = float(b_out) if b_out is not None else out * discount
    return inp, out


def register_prices(model: str, rates: tuple[float, float] | None) -> None:
    """Put a model missing from litellm's price map into it (our rates, else 0).

    litellm computes a response_cost for every response; for an unmapped model that lookup walks
    fallback name generalisations and costs ~15% of its per-request CPU. Our Pricer (not
    litellm's figure) is what gets reported, and it still calls such a model unpriced."""
    litellm = load_litellm()
    if model in _registered or model in litellm.model_cost or model.split("/", 1)[-1] in litellm.model_cost:
        return
    inp, out = rates or (0.0, 0.0)
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    _registered.add(model)
    litellm.register_model({model: {"input_cost_per_token": inp, "output_cost_per_token": out, "cache_creation_input_token_cost": 0.0,
                                    "cache_read_input_token_cost": 0.0, "litellm_provider": provider, "mode": "chat"}})


# --- sync over async ----------------------------------------------------------------------

def run_sync(coro: Any) -> Any:
    """asyncio.run, also from code that already runs a loop (async Prefect tasks, notebooks):
    then on a fresh loop in a worker thread. Exceptions propagate to the caller."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()
