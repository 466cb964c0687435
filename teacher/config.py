"""Typed config for the teacher stage: the replay client, its limits, retries, prices and ledger."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from core.base import StrictModel


class TeacherConfig(StrictModel):
    model: str = Field("openai/reference-teacher", description="litellm model string, e.g. openai/gpt-4o.")
    api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible endpoint (vLLM, TGI, a proxy); None lets litellm use the provider's own. Filled in when the reference teacher runs.")
    endpoint_id: str | None = Field(None, description="What identifies this endpoint in replay-ledger keys (default: api_base). Set it when the URL changes between runs but the answers do not (the reference teacher sets it to the hash of its answers file).")
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
    max_budget_usd: float | None = Field(None, gt=0, description="Stop sending new requests once this replay has spent this much (USD; answers already in the ledger count at the price they were paid; split evenly over shards). Batch mode sizes each batch by the cost estimate to what is left. Online: requests in flight finish, the rest are recorded failed with reason over_budget, and a rerun with a higher budget continues (paid answers come from the ledger). None: no limit. `distill estimate` prints the expected cost first.")
    progress: bool = Field(True, description="Show a tqdm progress bar (rate, ETA, spend) on stderr.")
