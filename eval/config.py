from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from core.base import StrictModel


class JudgeConfig(StrictModel):
    """Optional pairwise LLM judge (teacher vs student answer), asked in both orders."""

    enabled: bool = Field(False, description="Run the pairwise judge (costs one judge call per order per holdout item).")
    model: str = Field("openai/gpt-4o-mini", description="litellm model string of the judge.")
    api_base: str | None = Field(None, description="Base URL of an OpenAI-compatible judge endpoint; None uses the provider default.")
    api_key: SecretStr | None = Field(None, description="Judge API key; prefer env DISTILL__EVAL__JUDGE__API_KEY. Never logged.")
    max_items: int = Field(200, ge=1, description="Judge at most this many holdout items (the first ones, in holdout order).")
    concurrency: int = Field(8, ge=1, description="Judge requests in flight.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout for the judge.")


class EvalConfig(StrictModel):
    latency_requests: int = Field(100, ge=1, description="Requests timed per model (after warm-up) through the same OpenAI-compatible call path.")
    warmup_requests: int = Field(5, ge=0, description="Requests sent first and not timed.")
    latency_concurrency: int = Field(8, ge=1, description="Second concurrency level for the latency/throughput run (the first is always 1); student throughput for cost comes from this level.")
    time_teacher: bool = Field(True, description="Also time the teacher endpoint with the same prompts (re-calls the teacher; the cost of those calls is reported). False leaves teacher latency out of the report.")
    stream: bool = Field(True, description="Time with stream=True to measure time-to-first-token; falls back to non-streaming if an endpoint refuses.")
    prediction_concurrency: int = Field(8, ge=1, description="Student requests in flight while collecting holdout predictions.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout for student and timing calls.")
    student_api_key: SecretStr | None = Field(None, description="API key for the student endpoint, if it checks one. Never logged.")
    student_usd_per_hour: float = Field(0.10, ge=0, description="Hardware price for serving the student, spread over measured throughput.")
    training_usd_per_hour: float | None = Field(None, ge=0, description="Hardware price while training; None uses student_usd_per_hour. Multiplied by the train stage's wall_s.")
    monthly_requests: int = Field(1_000_000, ge=1, description="Expected monthly request volume: the training cost is amortised over it (one month) and break-even is reported against it.")
    bootstrap_samples: int = Field(2000, ge=100, description="Bootstrap resamples for the 95% intervals.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Two-sided interval level for bootstrap intervals.")
    seed: int = Field(0, description="Seed for bootstrap resampling and few-shot example choice.")
    gold_metadata_keys: list[str] = Field(["gold", "gold_label", "label"], description="Holdout record metadata keys holding a gold label (first present wins); else the recorded production 'response' is used as reference.")
    max_label_classes: int = Field(200, ge=2, description="Treat the task as classification (accuracy, macro-F1) when teacher outputs take at most this many distinct values and repeat.")
    baseline: Literal["auto", "off", "encoder", "causal_lm"] = Field("auto", description="No-fine-tuning baseline the student must beat: 'encoder' = the frozen base encoder with baseline_k teacher examples per answer (nearest centroid), 'causal_lm' = the base causal LM prompted few-shot; auto = the student's own base model kind.")
    baseline_k: int = Field(5, ge=0, description="Few-shot teacher examples given to the prompted base model (prompted baseline).")
    baseline_max_items: int = Field(100, ge=1, description="Holdout items scored by the prompted baseline (the first ones). The CPU causal LM takes seconds per item; fewer items give a wider interval.")
    plots: bool = Field(True, description="Write PNG plots (latency, cost, per-field accuracy) to <run>/eval/.")
    progress: bool = Field(True, description="Show tqdm progress bars (rate, ETA) on stderr for predictions, latency probes, the judge and baselines.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="Optional pairwise LLM judge.")


class GateCheck(StrictModel):
    """One gate rule on a report metric. Exactly one of min/max/min_relative_to/max_relative_to."""

    metric: str = Field(..., description="Metric name in report['metrics'], e.g. agreement, latency_p95_ms, cost_ratio, macro_f1, judge_score.")
    min: float | None = Field(None, description="Pass when the metric (its interval's lower bound if it has one) is >= this.")
    max: float | None = Field(None, description="Pass when the metric (its interval's upper bound if it has one) is <= this.")
    min_relative_to: str | None = Field(None, description="Reference: 'teacher', 'prompted_baseline' (looks up '<ref>_<metric>') or another metric name; pass when metric >= ref * factor + margin.")
    max_relative_to: str | None = Field(None, description="Reference like min_relative_to; pass when metric <= ref * factor + margin.")
    factor: float = Field(1.0, gt=0, description="Multiplier on the reference value for relative checks.")
    margin: float = Field(0.0, description="Added to the scaled reference value for relative checks (e.g. 0.02 = 2 points better than the baseline).")
    use_interval: bool = Field(True, description="Compare the conservative interval bound (lower for min, upper for max) rather than the point estimate when an interval exists.")
    required: bool = Field(True, description="When the metric or reference is missing: a required check fails, an optional one is skipped (reported, passes).")
    name: str | None = Field(None, description="Display name; default derived from the rule.")

    @model_validator(mode="after")
    def _one_rule(self) -> GateCheck:
        rules = [x for x in (self.min, self.max, self.min_relative_to, self.max_relative_to) if x is not None]
        if len(rules) != 1:
            raise ValueError(f"gate check on {self.metric!r}: set exactly one of min, max, min_relative_to, max_relative_to")
        return self


class GateConfig(StrictModel):
    min_agreement: float | None = Field(0.9, ge=0, le=1, description="Minimum student-teacher agreement on the holdout (compared with the bootstrap lower bound). None disables.")
    max_p95_latency_ms: float | None = Field(None, gt=0, description="Maximum student p95 latency in ms (concurrency 1).")
    max_cost_ratio: float | None = Field(None, gt=0, description="Maximum student/teacher cost per 1k requests.")
    checks: list[GateCheck] = Field(default_factory=list, description="Extra checks on any report metric, e.g. [{metric: agreement, min_relative_to: prompted_baseline}, {metric: latency_p95_ms, max_relative_to: teacher, factor: 0.5}].")
    on_missing: Literal["fail", "skip"] = Field("fail", description="What the three simple checks do when their metric is missing from the report (e.g. teacher unpriced so no cost ratio).")
