"""Typed config for the teacher stage: the replay client, its limits and ledger, and the embedded reference server."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from core.base import PathField, StrictModel


class FaultConfig(StrictModel):
    """Fault injection for the reference server, so retries, timeouts and crashes can be tested offline."""

    rate_429: float = Field(0.0, ge=0, le=1, description="Fraction of chat requests answered 429 with a Retry-After header.")
    retry_after_s: float = Field(0.05, ge=0, description="Retry-After value (seconds) sent with injected and rate-limit 429s.")
    rate_500: float = Field(0.0, ge=0, le=1, description="Fraction of chat requests answered 500.")
    rate_timeout: float = Field(0.0, ge=0, le=1, description="Fraction of chat requests that hang for hang_s (past the client's timeout) before answering.")
    hang_s: float = Field(30.0, ge=0, description="How long an injected timeout hangs, seconds.")
    rate_malformed: float = Field(0.0, ge=0, le=1, description="Fraction of chat requests answered 200 with a truncated, non-JSON body.")
    max_rps: float | None = Field(None, gt=0, description="Enforced rate limit (requests/s, token bucket with burst_s of capacity); excess gets 429 + Retry-After.")
    burst_s: float = Field(1.0, gt=0, description="Seconds of max_rps the server's bucket holds (its burst).")
    seed: int = Field(0, description="Seed for the fault and latency random draws (reproducible tests).")


class ReferenceServerConfig(StrictModel):
    """The embedded reference teacher: answers from a file of reference answers (offline demos, tests)."""

    enabled: bool = Field(False, description="Start the reference teacher on 127.0.0.1 before replay.")
    answers: str | None = PathField(None, "JSONL of {id, user, response} reference answers; relative to the config file.")
    host: str = Field("127.0.0.1", description="Interface to bind; keep loopback unless you mean to expose it.")
    port: int = Field(0, ge=0, description="Port to listen on; 0 picks a free one.")
    latency_ms: float = Field(0.0, ge=0, description="Added latency per request (mean), to mimic a hosted model.")
    latency_sigma: float = Field(0.0, ge=0, description="Lognormal sigma of the latency around latency_ms; 0 means constant latency.")
    model_name: str = Field("reference-teacher", description="Model id it reports on /v1/models.")
    api_key: SecretStr | None = Field(None, description="If set, chat requests must carry 'Authorization: Bearer <key>' (else 401). Never logged.")
    batch_delay_s: float = Field(0.0, ge=0, description="How long a submitted batch stays in_progress before it completes (Batch API emulation).")
    faults: FaultConfig = Field(default_factory=FaultConfig, description="Fault injection (429/500/timeouts/malformed bodies/rate limit).")


class TeacherConfig(StrictModel):
    model: str = Field("openai/reference-teacher", description="litellm model string, e.g. openai/gpt-4o.")
    api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible endpoint; filled in when the reference server runs.")
    api_key: SecretStr | None = Field(None, description="API key; prefer env DISTILL__TEACHER__API_KEY. Never logged.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature for replay.")
    max_tokens: int = Field(256, ge=1, description="Max tokens per teacher answer.")
    n: int = Field(1, ge=1, description="Samples per prompt; all are stored in 'samples', the first is 'response'.")
    system_prompt: str | None = Field(None, description="Teacher-only system prompt (the student never sees it); see system_prompt_mode.")
    system_prompt_mode: Literal["prepend", "replace"] = Field("prepend", description="'prepend': put system_prompt before the prompt's own system turn; 'replace': drop the prompt's system turns and use system_prompt.")
    concurrency: int = Field(16, ge=1, description="Max requests in flight.")
    rpm: float | None = Field(None, gt=0, description="Requests per minute the client allows itself (queueing token bucket; waits, never fails). None: unlimited.")
    tpm: float | None = Field(None, gt=0, description="Tokens per minute (prompt estimate + max_tokens*n per request, settled to actual usage). None: unlimited.")
    limiter_burst_s: float = Field(0.5, gt=0, description="Seconds of rpm/tpm the client's bucket may spend at once; below the provider's burst so it never trips the provider's limit.")
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(4, ge=0, description="Retries per prompt on 429/5xx/timeouts before it is recorded as failed.")
    retry_budget: float = Field(0.5, ge=0, description="Retries allowed over the whole replay, as a fraction of the prompts (plus 10); once spent, a failing prompt fails at once.")
    backoff_base_s: float = Field(0.5, gt=0, description="First backoff on 5xx/connection errors/timeouts; doubles per attempt, full jitter.")
    backoff_max_s: float = Field(30.0, gt=0, description="Cap on one backoff (and on a provider's Retry-After).")
    input_cost_per_token: float | None = Field(None, ge=0, description="Custom USD price per prompt token (self-hosted/unknown models).")
    output_cost_per_token: float | None = Field(None, ge=0, description="Custom USD price per completion token.")
    mode: Literal["online", "batch"] = Field("online", description="'online': live requests; 'batch': provider Batch API (OpenAI files+batches, about half price, hours of latency, resumable).")
    batch_poll_s: float = Field(30.0, gt=0, description="Batch mode: how often to poll the batch status.")
    batch_timeout_s: float = Field(90000.0, gt=0, description="Batch mode: give up waiting after this long (the batch id stays in the run dir; rerun to resume).")
    batch_discount: float = Field(0.5, gt=0, le=1, description="Batch mode: price factor when the price map has no batch price.")
    ledger_url: str | None = Field(None, description="SQLAlchemy URL of a shared ledger (e.g. postgresql+psycopg2://...); default: SQLite file under the data dir.")
    shards: int = Field(1, ge=1, description="Split the replay into this many Prefect tasks, run on the flow's task runner (orchestration.task_runner) or by several workers; rpm/tpm are split evenly and the shared ledger keeps any prompt from being paid twice.")
    progress: bool = Field(True, description="Show a tqdm progress bar (rate, ETA, spend) on stderr.")
    reference_server: ReferenceServerConfig = Field(default_factory=ReferenceServerConfig, description="Embedded reference teacher.")
