"""Ingest config: where logged prompts come from and how they are cleaned.

`source` is a union discriminated on `kind`; a source without `kind` is a JSONL file, so the
short form `source: {path: log.jsonl}` keeps working.
"""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from core.base import PathField, StrictModel, kind_union


class JsonlSource(StrictModel):
    """A JSONL log file (plain or .gz): OpenAI chat, {prompt, completion} or {input, output} lines."""

    kind: Literal["jsonl"] = Field("jsonl", description="Log source adapter: a JSONL file.")
    path: str | None = PathField(None, "Path of the log file (.jsonl or .jsonl.gz), or a glob for rotated logs (read in name order); relative to the config file.")


class OpenAIStoredSource(StrictModel):
    """OpenAI stored chat completions (created with store=True), listed through the openai SDK."""

    kind: Literal["openai_stored"] = Field(description="Log source adapter: OpenAI stored completions.")
    base_url: str | None = Field(None, description="API base URL (e.g. https://api.openai.com/v1); None uses the SDK default.")
    api_key: SecretStr | None = Field(None, description="API key; prefer env DISTILL__INGEST__SOURCE__API_KEY. Never logged.")
    model: str | None = Field(None, description="Only completions of this model.")
    metadata: dict[str, str] = Field(default_factory=dict, description="Only completions whose metadata has these key/value pairs.")
    page_size: int = Field(100, ge=1, le=100, description="Completions per list page.")
    fetch_concurrency: int = Field(8, ge=1, le=64, description="Completions whose messages are fetched at once (one request each).")
    timeout_s: float = Field(30.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(2, ge=0, description="SDK retries per request on 429/5xx/connection errors.")


class LiteLLMSpendLogsSource(StrictModel):
    """A LiteLLM proxy's spend logs table (needs store_prompts_in_spend_logs: true on the proxy)."""

    kind: Literal["litellm_spend_logs"] = Field(description="Log source adapter: LiteLLM proxy spend logs in SQL.")
    url: SecretStr = Field(description="SQLAlchemy database URL, e.g. postgresql+psycopg2://user:pw@host/db. Secret: it may hold a password.")
    db_schema: str | None = Field(None, description="Schema holding the table; None uses the connection's search path.")
    table: str = Field("LiteLLM_SpendLogs", description="Spend logs table name.")
    call_types: list[str] = Field(["acompletion", "completion"], description="call_type values that are chat completions; other rows are skipped in the query.")
    batch_size: int = Field(1000, ge=1, description="Rows fetched per round trip.")


class LangfuseSource(StrictModel):
    """Langfuse generation observations exported as JSON (a list, {"data": [...]}, or JSONL)."""

    kind: Literal["langfuse"] = Field(description="Log source adapter: a Langfuse observations export.")
    path: str = PathField(..., "Path of the exported JSON/JSONL file; relative to the config file.")


class SqlColumns(StrictModel):
    id: str | None = Field("id", description="Column with the record id; None derives ids from content.")
    messages: str | None = Field(None, description="Column with the chat messages (JSON list or native JSON).")
    prompt: str | None = Field(None, description="Column with a single user prompt (used when `messages` is None).")
    response: str | None = Field(None, description="Column with the recorded answer.")
    model: str | None = Field(None, description="Column with the model name.")
    timestamp: str | None = Field(None, description="Column with the request time (needed for incremental windows).")
    metadata: str | None = Field(None, description="Column with a JSON object of metadata.")
    tools: str | None = Field(None, description="Column with the request's tools (OpenAI function tools as a JSON list, or a whole request body with tools/tool_choice); needed when the messages hold tool calls.")


class SqlSource(StrictModel):
    """Any SQL query through SQLAlchemy, with a mapping from result columns to record fields."""

    kind: Literal["sql"] = Field(description="Log source adapter: a generic SQL query.")
    url: SecretStr = Field(description="SQLAlchemy database URL. Secret: it may hold a password.")
    query: str = Field(description="SELECT returning the log rows; may use :watermark (None, or the newest time already read as an ISO 8601 UTC string like 2026-10-01T12:00:00Z; cast it if the column is typed) to read only new rows.")
    columns: SqlColumns = Field(default_factory=SqlColumns, description="Which result column holds which record field.")
    batch_size: int = Field(1000, ge=1, description="Rows fetched per round trip.")


SourceConfig = kind_union("source", "jsonl", {"jsonl": JsonlSource, "openai_stored": OpenAIStoredSource,
                                             "litellm_spend_logs": LiteLLMSpendLogsSource, "langfuse": LangfuseSource,
                                             "sql": SqlSource})


class ValidationConfig(StrictModel):
    max_tokens: int = Field(16000, ge=1, description="Records whose prompt (all messages) is estimated above this many tokens are quarantined.")
    chars_per_token: float = Field(4.0, gt=0, description="Token estimate = characters / this (cheap, no tokenizer; ~4 for English).")
    allowed_roles: list[str] = Field(["system", "user", "assistant", "tool"], description="Message roles accepted ('developer' is read as 'system'; legacy 'function' results become 'tool' turns; a 'tool' turn must answer an earlier tool call).")


class DedupConfig(StrictModel):
    near_duplicates: bool = Field(True, description="Drop near-duplicates (MinHash/LSH over the non-system turns); the first seen is kept.")
    threshold: float = Field(0.9, gt=0, le=1, description="Estimated Jaccard similarity at or above which two prompts are near-duplicates.")
    num_perm: int = Field(64, ge=16, le=512, description="MinHash permutations (more = more accurate, slower).")
    shingle_chars: int = Field(5, ge=2, le=20, description="Character n-gram size of the shingles (suits short prompts).")
    decontaminate: bool = Field(True, description="Drop train records that are near-duplicates of a holdout record (this run's or a previous run's golden holdout).")
    decontaminate_threshold: float = Field(0.8, gt=0, le=1, description="Similarity at or above which a train record counts as a copy of a holdout record.")


class PiiConfig(StrictModel):
    enabled: bool = Field(True, description="Replace PII with stable placeholders like <EMAIL_1> before anything is written.")
    types: list[Literal["email", "phone", "card", "iban", "ssn", "nino"]] = Field(
        ["email", "phone", "card", "iban", "ssn", "nino"], description="PII types to redact.")


class WindowConfig(StrictModel):
    incremental: bool = Field(False, description="Read only records newer than the watermark stored by the last incremental run, then advance it; the holdout then also keeps every record earlier incremental runs held out (golden holdout).")
    state_dir: str | None = PathField(None, "Directory for the watermark and the golden holdout; default <data_dir>/ingest_state (next to runs/).")
    since: str | None = Field(None, description="Read only records at or after this ISO 8601 time (in addition to the watermark).")

    @field_validator("since")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError(f"{v!r} is not an ISO 8601 time (e.g. 2026-10-01T00:00:00Z)") from None
        return v


class SamplingConfig(StrictModel):
    tag_field: str = Field("feature", description="Metadata key whose value tags a record (e.g. the product feature).")
    max_per_tag: dict[str, int] = Field(default_factory=dict, description="Cap on train records per tag value in one run; a uniform sample by id hash is kept.")
    default_max_per_tag: int | None = Field(None, ge=1, description="Cap for tag values not listed in max_per_tag; None means no cap.")


class StoreConfig(StrictModel):
    """Where and in how much memory the run's dedup state lives (ingest/store.py)."""

    dir: str | None = PathField(None, "Directory for the run's temporary dedup index (sorted key runs + MinHash file); default <run>/ingest/.work, deleted when the run ends.")
    index_mb: float = Field(128, gt=0, description="Memory for the sorted key runs of the LSH index (16 B a band key, ~9 a kept record), MB; as much again for exact keys and ids. Past it, runs spill to memory-mapped files in `dir`.")
    bloom_mb: float = Field(64, gt=0, description="Bloom filter in front of the LSH index, MB (rounded down to a power of two; a quarter of it for exact keys and ids); ~16 bits per key keeps false probes under 0.1 %: about 9 keys per record, so 64 MB suits ~3M records.")
    minhash_cache: int = Field(100_000, ge=0, description="MinHash values of LSH candidates kept in memory (~0.4 KB each): popular buckets are compared with many records.")
    buffer_records: int = Field(50_000, ge=100, description="Records whose exact keys and ids wait in memory (~0.3 KB each) before they join the sorted runs.")
    parse_worker: bool = Field(True, description="JSONL sources: read, parse, validate, exact-dedup and redact in a second process while this one does near dedup and writes (two cores: ~2x the records/s); false does it all in one process.")


class IngestConfig(StrictModel):
    source: SourceConfig = Field(default_factory=JsonlSource, description="Where the logged prompts come from (discriminated on `kind`).")
    holdout_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="Share of records held out for evaluation, chosen by a stable hash of the record id.")
    max_records: int | None = Field(None, ge=1, description="Read at most this many records (for quick runs).")
    validation: ValidationConfig = Field(default_factory=ValidationConfig, description="What makes a record acceptable.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Exact and near-duplicate removal, and holdout decontamination.")
    pii: PiiConfig = Field(default_factory=PiiConfig, description="PII redaction (on by default).")
    window: WindowConfig = Field(default_factory=WindowConfig, description="Incremental reading and where ingest keeps state between runs.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Per-tag caps on train records.")
    store: StoreConfig = Field(default_factory=StoreConfig, description="The on-disk dedup index: peak memory is set here, not by the log's size.")
    parquet: bool = Field(True, description="Also write train/holdout as Hugging Face datasets Parquet files.")
    quarantine_raw_chars: int = Field(2000, ge=0, description="How much of a quarantined record's raw text to keep.")


class SelectConfig(StrictModel):
    """Which ingested train prompts are replayed through the (paid) teacher. The holdout is
    always replayed whole: it is what the student is judged on."""

    max_prompts: int = Field(ge=1, description="How many train prompts to replay (all of them when there are fewer).")
    strategy: Literal["uniform", "stratified", "diversity"] = Field("uniform", description="uniform: lowest id hashes (a stable uniform sample); stratified: an equal share per value of `field` (small values taken whole, the rest shared out); diversity: embed a reservoir of prompts with the encoder student's base model, cluster, and take an equal share per cluster (nearest the centre first) so rare request types are not drowned by common ones.")
    field: str = Field("feature", description="stratified: the metadata key whose values are the strata.")
    reservoir: int = Field(20_000, ge=1, description="diversity: prompts embedded and clustered (a uniform sample by id hash of at least max_prompts); bounds memory and embedding time on any log size.")
    clusters: int | None = Field(None, ge=2, description="diversity: number of k-means clusters; None: max_prompts (at most 1000), so each cluster gives about one prompt, the one nearest its centre.")
    embed_model: str | None = Field(None, description="diversity: the encoder to embed with; None uses the encoder student's base model (the bundled MiniLM when that is unset).")
