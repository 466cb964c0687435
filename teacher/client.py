"""TeacherClient: one ledgered, rate-limited, retried chat call (`await client.complete(messages)`).

Shared by the replay and by anything else that pays a model per prompt (e.g. an LLM judge):

    ledger = Ledger(path)                          # or Ledger("postgresql+psycopg2://...")
    client = TeacherClient(model="openai/gpt-4o-mini", api_base=None, ledger=ledger,
                           limiter=Limiter(rpm=500, tpm=200_000))
    rec = await client.complete(messages, temperature=0.0, max_tokens=64)
    rec["status"], rec["response"], rec["cost_usd"], rec["ledger_hit"], rec["error"]

Order of a call: ledger (a committed answer costs 0 and makes no HTTP call) -> claim -> limiter ->
litellm.acompletion -> commit. Retries: 429 waits Retry-After (else backoff); 5xx, connection
errors, timeouts and malformed bodies back off exponentially with full jitter; 4xx fail at once.
Every request carries `Idempotency-Key: <ledger key>` so a provider that honours it never bills a
resend after a crash. Identical requests in flight in one process share one call.
"""
from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from core.base import DistillError
from teacher.cost import Pricer
from teacher.ledger import Ledger, request_key
from teacher.limiter import Limiter
from teacher.textutil import messages_tokens

RETRYABLE = {"rate_limited", "server_error", "timeout", "connection_error", "malformed_response"}


class TeacherUnreachable(DistillError):
    """The teacher endpoint refuses connections before ever answering: fail the stage, not 10k prompts."""


class RetryBudget:
    """Retries allowed across all calls sharing it, so a sick provider cannot multiply the bill/time."""

    def __init__(self, total: int | None):
        self.left = total

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def _litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _ensure_mapped(model: str, rates: tuple[float, float] | None) -> None:
    """Put an unmapped model into litellm's price map (our prices, else 0).

    litellm computes a response_cost for every response; for a model missing from its map that
    lookup walks fallback name generalisations and costs ~15% of its per-request CPU. Our own
    Pricer (not litellm's figure) is what the replay reports, so registering is invisible.
    """
    litellm = _litellm()
    if model in litellm.model_cost or model.split("/", 1)[-1] in litellm.model_cost:
        return
    inp, out = rates or (0.0, 0.0)
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    litellm.register_model({model: {"input_cost_per_token": inp, "output_cost_per_token": out, "cache_creation_input_token_cost": 0.0,
                                    "cache_read_input_token_cost": 0.0, "litellm_provider": provider, "mode": "chat"}})


def classify(e: BaseException) -> tuple[str, float | None]:
    """(reason, retry_after_s) for an exception from litellm.acompletion."""
    chain, cur = [], e
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    names = {type(c).__name__ for c in chain}
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)) or "Timeout" in type(e).__name__ or "APITimeoutError" in names:
        return "timeout", None
    if names & {"JSONDecodeError", "_Malformed"}:
        return "malformed_response", None
    if names & {"APIConnectionError", "ConnectError", "ClientConnectorError", "ConnectionRefusedError", "ServerDisconnectedError", "RemoteProtocolError"}:
        return "connection_error", None
    status = getattr(e, "status_code", None)
    if status == 429:
        return "rate_limited", _retry_after(getattr(e, "litellm_response_headers", None))
    if status is not None and status >= 500:
        return "server_error", None
    if status == 408:
        return "timeout", None
    if status is not None and 400 <= status < 500:
        return f"http_{status}", None
    return "error", None


def _retry_after(headers: Any) -> float | None:
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except (TypeError, ValueError):  # an HTTP-date Retry-After: fall back to backoff
        return None
    return None


class TeacherClient:
    def __init__(self, *, model: str, api_base: str | None = None, api_key: str | None = None, timeout_s: float = 30.0,
                 ledger: Ledger | None = None, limiter: Limiter | None = None, max_retries: int = 4,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0, retry_budget: RetryBudget | None = None,
                 pricer: Pricer | None = None, seed: int | None = None, conn_error_limit: int = 32,
                 key_api_base: str | None = None):
        self.model, self.api_base, self.timeout_s = model, api_base, timeout_s
        # What identifies the endpoint in the ledger key; differs from api_base only for endpoints
        # whose URL changes between runs for the same answers (the embedded reference teacher).
        self.key_api_base = key_api_base or api_base
        # openai-compatible local servers need *a* key; real providers read theirs from env if unset.
        if api_key is None and model.startswith("openai/") and api_base and not os.environ.get("OPENAI_API_KEY"):
            api_key = "no-key"
        self._api_key = api_key
        self.ledger, self.limiter = ledger, limiter or Limiter()
        self.max_retries, self.backoff_base_s, self.backoff_max_s = max_retries, backoff_base_s, backoff_max_s
        self.budget = retry_budget or RetryBudget(None)
        self.pricer = pricer or Pricer(model)
        _ensure_mapped(model, self.pricer.rates)
        self.rng = random.Random(seed)
        self.ever_answered = False
        self.conn_error_streak = 0  # connection errors in a row, across all calls
        self.conn_error_limit = conn_error_limit  # a streak this long (no answer in between) means the endpoint is down
        self.http_requests = 0
        self.retries = 0
        self.in_doubt = 0
        self._inflight: dict[str, asyncio.Future] = {}

    def params(self, *, temperature: float, max_tokens: int, n: int, extra: dict | None = None) -> dict:
        """Everything besides the messages that changes the answer (and so the ledger key)."""
        return {"model": self.model, "api_base": self.key_api_base, "temperature": temperature, "max_tokens": max_tokens, "n": n, **(extra or {})}

    async def complete(self, messages: list[dict], *, temperature: float = 0.0, max_tokens: int = 256, n: int = 1,
                       extra: dict | None = None, wait_if_busy: bool = True) -> dict | None:
        """The answer record. With wait_if_busy=False, None when another live worker holds the
        claim (the caller can do other prompts first and come back)."""
        key = request_key(messages, self.params(temperature=temperature, max_tokens=max_tokens, n=n, extra=extra))
        if key in self._inflight:  # the same request already in flight here: share it, pay once
            rec = await asyncio.shield(self._inflight[key])
            if rec is None:
                return None
            return {**rec, "ledger_hit": rec["status"] == "ok", "cost_usd": 0.0 if rec["status"] == "ok" else rec["cost_usd"]}
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            rec = await self._complete(key, messages, temperature, max_tokens, n, extra or {}, wait_if_busy)
            fut.set_result(rec)
            return rec
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: no "never retrieved" warning when nobody shared it
            raise
        finally:
            del self._inflight[key]

    async def _complete(self, key: str, messages: list[dict], temperature: float, max_tokens: int, n: int, extra: dict,
                        wait_if_busy: bool = True) -> dict | None:
        if self.ledger is not None:
            while True:
                claim = self.ledger.claim(key)
                if claim.state == "done":
                    return {**claim.record, "key": key, "ledger_hit": True, "cost_usd": 0.0}
                if claim.state == "claimed":
                    self.in_doubt += claim.in_doubt
                    break
                if not wait_if_busy:
                    return None
                await asyncio.sleep(0.5)  # another live worker is paying for it: wait for its answer
        try:
            rec = await self._call_with_retries(key, messages, temperature, max_tokens, n, extra)
        except BaseException:
            if self.ledger is not None:
                self.ledger.fail(key, "interrupted")
            raise
        if self.ledger is not None:
            if rec["status"] == "ok":
                self.ledger.complete(key, {k: v for k, v in rec.items() if k not in ("key", "ledger_hit")}, rec["cost_usd"])
            else:
                self.ledger.fail(key, rec["error"])
        return rec

    async def _call_with_retries(self, key: str, messages: list[dict], temperature: float, max_tokens: int, n: int, extra: dict) -> dict:
        litellm = _litellm()
        est = messages_tokens(messages) + max_tokens * n
        attempts, t_first = 0, time.monotonic()
        while True:
            attempts += 1
            await self.limiter.acquire(est)
            t0 = time.monotonic()
            self.http_requests += 1
            try:
                resp = await asyncio.wait_for(litellm.acompletion(
                    model=self.model, messages=messages, api_base=self.api_base, api_key=self._api_key,
                    temperature=temperature, max_tokens=max_tokens, n=n, timeout=self.timeout_s, max_retries=0,
                    extra_headers={"Idempotency-Key": key}, **extra), self.timeout_s + 5)  # backstop if a client ignores timeout
                rec = self._record(key, resp, (time.monotonic() - t0) * 1000, attempts)
                self.limiter.settle(est, rec["prompt_tokens"] + rec["completion_tokens"])
                self.ever_answered = True
                self.conn_error_streak = 0
                return rec
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as e:
                reason, retry_after = classify(e)
                self.limiter.settle(est, 0)  # a refused request uses no quota
                if reason == "connection_error":
                    # Refused before ever answering, or a long streak with no answer in between:
                    # the endpoint is down; stop rather than burn every prompt's retries.
                    self.conn_error_streak += 1
                    if not self.ever_answered or self.conn_error_streak >= self.conn_error_limit:
                        raise TeacherUnreachable(f"teacher unreachable at {self.api_base or self.model} "
                                                 f"({self.conn_error_streak} connection errors in a row): {_short(e)}") from None
                if reason in ("http_401", "http_403") and not self.ever_answered:
                    # A bad/missing key fails every prompt the same way: stop the stage, say where.
                    raise DistillError(f"teacher at {self.api_base or self.model} rejected the API key ({reason}); "
                                       f"set teacher.api_key or env DISTILL__TEACHER__API_KEY: {_short(e)}") from None
                msg = f"{reason}: {_short(e)}"
                if reason not in RETRYABLE or attempts > self.max_retries or not self.budget.take():
                    why = "" if reason not in RETRYABLE else f" (after {attempts} attempts)" if attempts > self.max_retries else " (retry budget spent)"
                    return self._failed(key, msg + why, attempts, (time.monotonic() - t_first) * 1000)
                self.retries += 1
                backoff = self.rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempts - 1)))
                await asyncio.sleep(min(self.backoff_max_s, retry_after) if retry_after is not None else backoff)

    def _record(self, key: str, resp: Any, latency_ms: float, attempts: int) -> dict:
        choices = getattr(resp, "choices", None) or []
        samples = [getattr(c.message, "content", None) for c in choices]
        if not samples or samples[0] is None:
            raise _Malformed("response has no choices/content")
        usage = getattr(resp, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self.pricer.cost(pt, ct)
        return {"key": key, "status": "ok", "response": samples[0], "samples": samples,
                "finish_reason": choices[0].finish_reason, "prompt_tokens": pt, "completion_tokens": ct,
                "latency_ms": round(latency_ms, 2), "cost_usd": cost or 0.0, "priced": cost is not None,
                "ledger_hit": False, "error": None, "attempts": attempts}

    def _failed(self, key: str, error: str, attempts: int, latency_ms: float) -> dict:
        return {"key": key, "status": "failed", "response": None, "samples": [], "finish_reason": None, "prompt_tokens": 0,
                "completion_tokens": 0, "latency_ms": round(latency_ms, 2), "cost_usd": 0.0, "priced": self.pricer.priced,
                "ledger_hit": False, "error": error, "attempts": attempts}


class _Malformed(Exception):
    """A 200 whose body parsed but carries no answer; classified as malformed_response via the name check."""


def _short(e: BaseException) -> str:
    s = str(e).replace("\n", " ")
    return (s[:300] + "...") if len(s) > 300 else s


def complete_many(client: TeacherClient, messages_list: list[list[dict]], *, concurrency: int = 16, temperature: float = 0.0,
                  max_tokens: int = 256, n: int = 1, extra: dict | None = None) -> list[dict]:
    """Synchronous batch helper (e.g. for an LLM judge): every call ledgered, in input order, on one event loop."""

    async def run() -> list[dict]:
        out: list[dict | None] = [None] * len(messages_list)
        it = iter(range(len(messages_list)))

        async def worker() -> None:
            for i in it:
                out[i] = await client.complete(messages_list[i], temperature=temperature, max_tokens=max_tokens, n=n, extra=extra)

        await asyncio.gather(*[worker() for _ in range(max(1, min(concurrency, len(messages_list))))])
        return out  # type: ignore[return-value]

    return asyncio.run(run())
