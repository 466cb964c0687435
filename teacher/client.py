"""TeacherClient: one ledgered, rate-limited, retried chat call (`await client.complete(messages)`).

Shared by the replay and by anything else that pays a model per prompt (e.g. an LLM judge):

    ledger = Ledger(path)                          # or Ledger("postgresql+psycopg2://...")
    client = TeacherClient(model="openai/gpt-4o-mini", api_base=None, ledger=ledger,
                           limiter=Limiter(rpm=500, tpm=200_000))
    rec = await client.complete(messages, temperature=0.0, max_tokens=64)
    rec["status"], rec["response"], rec["cost_usd"], rec["ledger_hit"], rec["error"]  (+ rec["tool_calls"])
    # tools: client.complete(messages, extra={"tools": [...], "tool_choice": "auto"}) - part of the ledger key

Order of a call: ledger (a committed answer costs 0 and makes no HTTP call) -> claim -> limiter ->
core.llm.acompletion -> commit. Retries (core.llm.classify): 429 waits Retry-After (else
backoff); 5xx, connection errors, timeouts and malformed bodies back off exponentially with full
jitter; 4xx fail at once. Every request carries `Idempotency-Key: <ledger key>` so a provider
that honours it never bills a resend after a crash. Identical requests in flight in one process
share one call. (From a TeacherConfig: teacher.from_config.build_client.)
"""
from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from core import llm
from core.base import DistillError
from core.toolcalls import wire_calls
from teacher.ledger import Ledger, request_key
from teacher.limiter import Limiter
from teacher.textutil import messages_tokens


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


class TeacherClient:
    def __init__(self, *, model: str, api_base: str | None = None, api_key: str | None = None, timeout_s: float = 30.0,
                 ledger: Ledger | None = None, limiter: Limiter | None = None, max_retries: int = 4,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 30.0, retry_budget: RetryBudget | None = None,
                 pricer: llm.Pricer | None = None, seed: int | None = None, conn_error_limit: int = 32,
                 key_api_base: str | None = None):
        self.model, self.api_base, self.timeout_s = model, api_base, timeout_s
        # The HTTP client never retries on its own (max_retries=0): retries are ours, so each is counted and budgeted.
        self.endpoint = llm.Endpoint(model, api_base, api_key, temperature=None, max_tokens=None, timeout_s=timeout_s, max_retries=0)
        # What identifies the endpoint in the ledger key; differs from api_base only for endpoints
        # whose URL changes between runs for the same answers (the reference teacher).
        self.key_api_base = key_api_base or api_base
        self.ledger, self.limiter = ledger, limiter or Limiter()
        self.max_retries, self.backoff_base_s, self.backoff_max_s = max_retries, backoff_base_s, backoff_max_s
        self.budget = retry_budget or RetryBudget(None)
        self.pricer = pricer or llm.Pricer(model)
        llm.register_prices(model, self.pricer.rates)
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
        est = messages_tokens(messages) + max_tokens * n
        attempts, t_first = 0, time.monotonic()
        while True:
            attempts += 1
            await self.limiter.acquire(est)
            t0 = time.monotonic()
            self.http_requests += 1
            try:
                resp = await llm.acompletion(self.endpoint, messages, temperature=temperature, max_tokens=max_tokens, n=n,
                                             extra_headers={"Idempotency-Key": key}, **extra)
                p = llm.parse_response(resp)
                calls = wire_calls(p.tool_calls)
                if p.samples[0] is None and not calls:
                    raise llm.MalformedResponse("response has no text content and no tool calls")
                rec = self.ok_record(key, p.samples, p.finish_reason, p.prompt_tokens, p.completion_tokens,
                                     (time.monotonic() - t0) * 1000, attempts, tool_calls=calls)
                self.limiter.settle(est, p.prompt_tokens + p.completion_tokens)
                self.ever_answered = True
                self.conn_error_streak = 0
                return rec
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as e:
                failure = llm.classify(e)
                reason = failure.reason
                self.limiter.settle(est, 0)  # a refused request uses no quota
                if reason == "connection_error":
                    # Refused before ever answering, or a long streak with no answer in between:
                    # the endpoint is down; stop rather than burn every prompt's retries.
                    self.conn_error_streak += 1
                    if not self.ever_answered or self.conn_error_streak >= self.conn_error_limit:
                        raise TeacherUnreachable(f"teacher unreachable at {self.api_base or self.model} "
                                                 f"({self.conn_error_streak} connection errors in a row): {llm.short(e)}") from None
                if reason in ("http_401", "http_403") and not self.ever_answered:
                    # A bad/missing key fails every prompt the same way: stop the stage, say where.
                    raise DistillError(f"teacher at {self.api_base or self.model} rejected the API key ({reason}); "
                                       f"set teacher.api_key or env DISTILL__TEACHER__API_KEY: {llm.short(e)}") from None
                msg = f"{reason}: {llm.short(e)}"
                if not failure.retryable or attempts > self.max_retries or not self.budget.take():
                    why = "" if not failure.retryable else f" (after {attempts} attempts)" if attempts > self.max_retries else " (retry budget spent)"
                    return self.failed_record(key, msg + why, attempts, (time.monotonic() - t_first) * 1000)
                self.retries += 1
                wait = failure.retry_after_s
                if wait is None:
                    wait = self.rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempts - 1)))
                await asyncio.sleep(min(self.backoff_max_s, wait))

    def ok_record(self, key: str, samples: list[str | None], finish_reason: str | None, prompt_tokens: int,
                  completion_tokens: int, latency_ms: float, attempts: int, tool_calls: list[dict] | None = None) -> dict:
        """The ledger/replay record of an answered call, priced by this client's Pricer. An answer
        that calls tools keeps its calls, canonical (core.toolcalls), beside its text (often None)."""
        cost = self.pricer.cost(prompt_tokens, completion_tokens)
        rec = {"key": key, "status": "ok", "response": samples[0], "samples": samples,
               "finish_reason": finish_reason, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
               "latency_ms": round(latency_ms, 2), "cost_usd": cost or 0.0, "priced": cost is not None,
               "ledger_hit": False, "error": None, "attempts": attempts}
        if tool_calls:
            rec["tool_calls"] = tool_calls
        return rec

    def failed_record(self, key: str, error: str, attempts: int, latency_ms: float) -> dict:
        return {"key": key, "status": "failed", "response": None, "samples": [], "finish_reason": None, "prompt_tokens": 0,
                "completion_tokens": 0, "latency_ms": round(latency_ms, 2), "cost_usd": 0.0, "priced": self.pricer.priced,
                "ledger_hit": False, "error": error, "attempts": attempts}


def complete_many(client: TeacherClient, messages_list: list[list[dict]], *, concurrency: int = 16, temperature: float = 0.0,
                  max_tokens: int = 256, n: int = 1, extra: dict | None = None, on_record: Any = None) -> list[dict]:
    """Synchronous batch helper (e.g. for an LLM judge): every call ledgered, in input order, on
    one event loop (a fresh one in a thread when called under a running loop)."""

    async def run() -> list[dict]:
        out: list[dict | None] = [None] * len(messages_list)
        it = iter(range(len(messages_list)))

        async def worker() -> None:
            for i in it:
                out[i] = await client.complete(messages_list[i], temperature=temperature, max_tokens=max_tokens, n=n, extra=extra)
                if on_record is not None:
                    on_record(out[i])

        await asyncio.gather(*[worker() for _ in range(max(1, min(concurrency, len(messages_list))))])
        return out  # type: ignore[return-value]

    return llm.run_sync(run())
