"""Config of the reference teacher (top-level section `reference_teacher`): answers, latency, faults."""
from __future__ import annotations

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


class ReferenceTeacherConfig(StrictModel):
    """The reference teacher: answers from a file of reference answers (offline demos, tests)."""

    enabled: bool = Field(False, description="Start the reference teacher on 127.0.0.1 for the run (replay and eval call it like a hosted model; teacher.api_base is pointed at it).")
    answers: str | None = PathField(None, "JSONL of {id, user, response} reference answers; relative to the config file.")
    host: str = Field("127.0.0.1", description="Interface to bind; keep loopback unless you mean to expose it.")
    port: int = Field(0, ge=0, description="Port to listen on; 0 picks a free one.")
    latency_ms: float = Field(0.0, ge=0, description="Added latency per request (mean), to mimic a hosted model.")
    latency_sigma: float = Field(0.0, ge=0, description="Lognormal sigma of the latency around latency_ms; 0 means constant latency.")
    model_name: str = Field("reference-teacher", description="Model id it reports on /v1/models.")
    api_key: SecretStr | None = Field(None, description="If set, chat requests must carry 'Authorization: Bearer <key>' (else 401). Never logged.")
    honour_idempotency_key: bool = Field(True, description="Answer a repeated Idempotency-Key with the stored answer, unbilled (as some providers do); false bills every request, like the large providers' chat completions.")
    batch_delay_s: float = Field(0.0, ge=0, description="How long a submitted batch stays in_progress before it completes (Batch API emulation).")
    faults: FaultConfig = Field(default_factory=FaultConfig, description="Fault injection (429/500/timeouts/malformed bodies/rate limit).")

    def endpoint_id(self) -> str:
        """Its identity in replay-ledger keys: the answers file's content, not the (free) port,
        so a new run on a new port still finds what an earlier run paid for."""
        from core.base import file_hash

        return f"reference-teacher:{file_hash(self.answers) if self.answers else 'none'}"
