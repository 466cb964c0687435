"""FilterConfig: the `filter:` section. One sub-section per filter; each filter reads only its own.

Defaults are chosen so a run with no `filter:` section still drops what is plainly unusable
(failed replays, empty/truncated/refused answers, outputs that break the schema, duplicates)
and never calls a paid model (the LLM judge is off by default).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.base import PathField, StrictModel

# Realistic refusal/apology openers from hosted teachers. Matched case-insensitively within the
# first `refusal.search_chars` characters. "I'm sorry to hear that" (support replies) is not here
# on purpose: an apology alone is not a refusal.
DEFAULT_REFUSAL_PATTERNS = [
    r"\b(i'?m|i am) (sorry|afraid),? (but )?(i|we) (can'?t|cannot|won'?t|am unable|'m unable|am not able|'m not able)",
    r"\bsorry,? (but )?(i|we) (can'?t|cannot|won'?t|am unable|'m unable)",
    r"\bi apologi[sz]e,? but (i|we) (can'?t|cannot|won'?t|am unable|'m unable|am not able)",
    r"\b(i|we)('m|'re| am| are)? (can'?t|cannot|won'?t|will not|unable to|not able to) (help|assist|comply|provide|fulfil+|answer|do that|engage|support) (with )?(that|this|your|the|such)",
    r"\bi (must|have to) (respectfully )?decline\b",
    r"\bas an ai( language model| assistant)?,? i (can'?t|cannot|don'?t|do not|am not|'m not)",
    r"\bi'?m not (allowed|permitted|able) to (help|assist|provide|share|answer)",
    r"\bthis (request|content) (violates|goes against)",
    r"\bi can(no|')t (help|assist) with (that|this)( request)?",
]


class FormatFilterConfig(StrictModel):
    """Output format check. With `json_schema` (top level) set, outputs must be JSON that satisfies it."""

    mode: Literal["auto", "json", "regex", "labels", "off"] = Field(
        "auto",
        description="auto: json_schema if set, else regex, else labels, else infer a JSON schema when most outputs are JSON, else no check. "
        "json: outputs must parse as JSON (schema from json_schema or inferred). regex / labels: see below.",
    )
    infer_schema: bool = Field(True, description="Without json_schema, infer one from the majority of teacher outputs (key set, value types, enums when low cardinality).")
    infer_min_json_share: float = Field(0.8, ge=0, le=1, description="In auto mode, infer a JSON schema only when at least this share of outputs parse as JSON.")
    infer_key_share: float = Field(0.5, gt=0, le=1, description="A key is required in the inferred schema when more than this share of JSON outputs have it.")
    infer_allow_extra_keys: bool = Field(False, description="Allow keys outside the inferred key set (False drops outputs with stray keys).")
    enum_max_distinct: int = Field(200, ge=1, description="Infer an enum for a string field only when it has at most this many distinct values.")
    enum_max_ratio: float = Field(0.2, gt=0, le=1, description="... and when distinct values are at most this share of the outputs (low cardinality).")
    enum_min_count: int = Field(2, ge=1, description="Values seen fewer times than this are left out of an inferred enum (a one-off label is more likely a teacher slip than a class).")
    regex: str | None = Field(None, description="Regex the whole (stripped) output must match (mode regex).")
    labels: list[str] | None = Field(None, description="Allowed labels (mode labels): the stripped output, or `label_field` of a JSON output, must be one of them.")
    labels_file: str | None = PathField(None, "File with one allowed label per line (alternative to `labels`); relative to the config file.")
    label_field: str | None = Field(None, description="With labels: check this field of a JSON output instead of the whole text.")
    unwrap_code_fences: bool = Field(True, description="Accept JSON wrapped in a ```json fence and store the unwrapped JSON as the response (the original is kept in original_response).")


class RefusalFilterConfig(StrictModel):
    enabled: bool = Field(True, description="Drop refusals and apologies-instead-of-answers.")
    patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS), description="Case-insensitive regexes that mark a refusal.")
    extra_patterns: list[str] = Field(default_factory=list, description="Regexes added to `patterns` (keeps the defaults).")
    search_chars: int = Field(400, ge=1, description="Only look at the first N characters: refusals come first; a long answer that quotes one is not a refusal.")


class TruncationFilterConfig(StrictModel):
    enabled: bool = Field(True, description="Drop outputs the teacher did not finish.")
    finish_reasons: list[str] = Field(default_factory=lambda: ["length", "max_tokens", "content_filter"], description="finish_reason values that mean the answer is cut off or withheld.")


class EmptyFilterConfig(StrictModel):
    enabled: bool = Field(True, description="Drop null, empty or whitespace-only outputs.")


class LengthFilterConfig(StrictModel):
    min_tokens: int | None = Field(None, ge=0, description="Drop outputs shorter than this many tokens (None: no lower bound).")
    max_tokens: int | None = Field(None, ge=1, description="Drop outputs longer than this many tokens (None: no upper bound).")
    use_reported_tokens: bool = Field(True, description="Use the teacher's completion_tokens when reported; else count words and punctuation.")


class ConsistencyFilterConfig(StrictModel):
    enabled: bool = Field(True, description="With n > 1 teacher samples per prompt (record field `samples`), keep prompts whose majority answer is common enough.")
    threshold: float = Field(0.6, gt=0, le=1, description="Minimum share of samples that must agree with the majority answer.")
    fields: list[str] | None = Field(None, description="For JSON outputs, compare only these fields (e.g. [intent]); None compares the whole parsed object.")
    on_minority_response: Literal["replace", "drop"] = Field("replace", description="When `response` is not the majority answer: replace it with a majority sample (original kept) or drop the record.")


class ConflictFilterConfig(StrictModel):
    enabled: bool = Field(True, description="Resolve identical inputs that got different outputs.")
    mode: Literal["majority", "drop"] = Field("majority", description="majority: keep the records carrying the most common output (ties: all dropped); drop: drop every record of a conflicting input.")
    dedup: bool = Field(True, description="Drop exact repeats of the same (input, output) pair, keeping the first.")


class ToolCallFilterConfig(StrictModel):
    """Check the teacher's tool calls against the declared tool schemas."""

    enabled: bool = Field(True, description="Drop answers whose tool calls break the declared tools' schemas (name exists, required arguments present, types valid, no unknown arguments).")
    allow_unknown_arguments: bool = Field(False, description="Keep calls that pass arguments the tool's schema does not declare (unless the schema says additionalProperties: false).")
    check_types: bool = Field(True, description="Validate argument values against the schema (types, enums, nested objects), not only names.")
    enforce_tool_choice: bool = Field(True, description="Drop text answers when tool_choice demanded a call, and calls when it said none or named another tool.")


class JudgeFilterConfig(StrictModel):
    enabled: bool = Field(False, description="Score every surviving output with an LLM judge (paid calls, ledgered so a rerun never pays twice).")
    model: str | None = Field(None, description="litellm model string of the judge; None uses the teacher's model and endpoint.")
    api_base: str | None = Field(None, description="Judge endpoint; None uses the teacher's api_base when the judge is the teacher.")
    rubric: str = Field(
        "The answer follows the instructions, is correct, complete, and in the requested format.",
        description="What a good answer looks like; the judge scores 1-10 against it.",
    )
    threshold: float = Field(7.0, ge=1, le=10, description="Keep outputs scored at least this (1-10).")
    max_tokens: int = Field(128, ge=1, description="Max tokens for each judge answer.")
    concurrency: int = Field(8, ge=1, description="Judge requests in flight.")
    on_error: Literal["drop", "keep"] = Field("drop", description="When the judge call fails or its answer has no score.")


class ReportConfig(StrictModel):
    min_train_examples: int = Field(100, ge=0, description="Fewer kept training examples than this stops training unless --force.")
    warn_train_examples: int = Field(500, ge=0, description="Fewer kept training examples than this gives a warning.")
    min_per_label: int = Field(5, ge=0, description="Labels with fewer kept examples than this are listed as too thin.")


class FilterConfig(StrictModel):
    json_schema: str | None = PathField(None, "JSON Schema file the teacher's outputs must satisfy; relative to the config file.")
    format: FormatFilterConfig = Field(default_factory=FormatFilterConfig, description="Output format check (JSON schema, inferred schema, regex or label set).")
    empty: EmptyFilterConfig = Field(default_factory=EmptyFilterConfig, description="Empty-output filter.")
    truncation: TruncationFilterConfig = Field(default_factory=TruncationFilterConfig, description="Truncated-output filter (finish_reason).")
    refusal: RefusalFilterConfig = Field(default_factory=RefusalFilterConfig, description="Refusal/apology filter.")
    length: LengthFilterConfig = Field(default_factory=LengthFilterConfig, description="Output length bounds in tokens.")
    tool_call: ToolCallFilterConfig = Field(default_factory=ToolCallFilterConfig, description="Tool calls against the declared tools' schemas (records that declare tools).")
    consistency: ConsistencyFilterConfig = Field(default_factory=ConsistencyFilterConfig, description="Teacher self-consistency over n samples.")
    conflicts: ConflictFilterConfig = Field(default_factory=ConflictFilterConfig, description="Conflicting and duplicate examples.")
    judge: JudgeFilterConfig = Field(default_factory=JudgeFilterConfig, description="LLM-as-judge filter (off by default).")
    report: ReportConfig = Field(default_factory=ReportConfig, description="Data report thresholds (sufficiency checks).")
