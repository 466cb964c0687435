"""Config of the student/teacher cascade (root config section `cascade:`; see eval/cascade.py)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.base import PathField, StrictModel


class CascadeConfig(StrictModel):
    """The student answers the requests it is confident about, the teacher the rest.

    The confidence threshold is chosen on the validation split for exactly one target: a cascade
    agreement with the teacher (`target_agreement`) or a teacher share (`max_teacher_share`); the
    holdout only measures the chosen point."""

    enabled: bool = Field(False, description="Evaluate (and allow serving) the cascade: pick a confidence threshold on the validation split, report it on the holdout.")
    target_agreement: float | None = Field(None, gt=0, le=1, description="Choose the threshold giving the largest student share whose validation cascade agreement with the teacher reaches this (teacher-answered requests count as agreeing). Set this or max_teacher_share.")
    max_teacher_share: float | None = Field(None, ge=0, le=1, description="Instead of an agreement target: the threshold whose validation teacher share (forwarded requests) is at most this, as high as that allows. Set this or target_agreement.")
    criterion: Literal["point", "lower_bound"] = Field("lower_bound", description="target_agreement is met on validation by the point estimate, or (default, safer) by the lower bound of its Wilson interval at `confidence` - the holdout then lands at or above the target more often than not.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Interval level for criterion lower_bound (and the holdout bootstrap interval).")
    min_coverage: float = Field(0.0, ge=0, le=1, description="A threshold must leave the student at least this share of requests; if none reaching the target does, the target is unreachable and the gate fails with that reason.")
    forward_log: str | None = PathField(None, "Serving: JSONL file every teacher-forwarded request/response is appended to, in the chat-log shape `ingest` reads (point a later run's ingest.source at it); None = <data_dir>/cascade/forwarded.jsonl.")
    teacher_timeout_s: float = Field(30.0, gt=0, description="Serving: how long a forwarded request waits for the teacher (retries included) before the student's answer is returned, flagged.")

    @model_validator(mode="after")
    def _one_target(self) -> "CascadeConfig":
        if self.target_agreement is not None and self.max_teacher_share is not None:
            raise ValueError("cascade.target_agreement and cascade.max_teacher_share are both set: set exactly one")
        if self.enabled and self.target_agreement is None and self.max_teacher_share is None:
            raise ValueError("cascade.target_agreement: set it (or cascade.max_teacher_share) when cascade.enabled is true")
        return self
