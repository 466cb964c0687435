"""Output format: JSON (+ JSON Schema from config or inferred), a regex, or an allowed label set.

A student can only learn a format the data shows consistently; one malformed output in ten
teaches it to be malformed one time in ten.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from core.base import DistillError
from teacher.filter_config import FilterConfig
from teacher.filters.base import KEEP, Filter, Verdict, drop, parse_json, response_text, unwrap_fence
from teacher.filters.schema_infer import infer_schema


def load_schema(path: str) -> dict:
    from jsonschema import SchemaError
    from jsonschema.validators import validator_for

    p = Path(path)
    if not p.is_file():
        raise DistillError(f"filter.json_schema: file not found: {p}")
    try:
        schema = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DistillError(f"filter.json_schema: {p} is not valid JSON: {e}") from None
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        raise DistillError(f"filter.json_schema: {p} is not a valid JSON Schema: {e.message}") from None
    return schema


def load_labels(cfg: FilterConfig) -> list[str] | None:
    f = cfg.format
    if f.labels_file:
        p = Path(f.labels_file)
        if not p.is_file():
            raise DistillError(f"filter.format.labels_file: file not found: {p}")
        return [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return list(f.labels) if f.labels else None


class FormatFilter(Filter):
    name = "format"

    def __init__(self, config: FilterConfig):
        super().__init__(config)
        f = config.format
        self.schema: dict | None = load_schema(config.json_schema) if config.json_schema else None
        self.schema_source = "config" if self.schema else None
        self.labels = load_labels(config)
        self._label_set = set(self.labels or [])
        self.regex = None
        if f.regex:
            try:
                self.regex = re.compile(f.regex, re.S)
            except re.error as e:
                raise DistillError(f"filter.format.regex: invalid regex {f.regex!r}: {e}") from None
        self.mode = f.mode
        if self.mode == "regex" and self.regex is None:
            raise DistillError("filter.format.mode is 'regex' but filter.format.regex is not set")
        if self.mode == "labels" and not self.labels:
            raise DistillError("filter.format.mode is 'labels' but neither filter.format.labels nor labels_file is set")
        self._validator = None

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def setup(self, records: list[dict]) -> None:
        f = self.config.format
        if self.mode == "auto":
            if self.schema is not None:
                self.mode = "json"
            elif self.regex is not None:
                self.mode = "regex"
            elif self.labels:
                self.mode = "labels"
            else:
                texts = [response_text(r) for r in records if response_text(r).strip() and not r.get("tool_calls")]
                parsed = [parse_json(t) for t in texts]
                share = sum(ok for ok, _ in parsed) / len(texts) if texts else 0.0
                if f.infer_schema and texts and share >= f.infer_min_json_share:
                    self.mode = "json"
                else:
                    self.mode = "off"
                    self.note = f"free text ({share:.0%} of outputs are JSON): no format check"
                    return
        if self.mode == "json" and self.schema is None and f.infer_schema:
            values = [v for ok, v in (parse_json(response_text(r)) for r in records if not r.get("tool_calls")) if ok]
            self.schema = infer_schema(values, f)
            self.schema_source = "inferred" if self.schema else None
        if self.mode == "json":
            if self.schema is not None:
                from jsonschema.validators import validator_for

                self._validator = validator_for(self.schema)(self.schema)
            self.note = f"json, schema: {self.schema_source or 'none (parse only)'}"
        else:
            self.note = self.mode

    def check(self, record: dict) -> Verdict:
        if record.get("tool_calls"):
            return KEEP  # the answer's format is its calls, checked against the tools' schemas (tool_call filter)
        text = response_text(record)
        if self.mode == "json":
            return self._check_json(text)
        if self.mode == "regex":
            s = text.strip()
            if self.regex.fullmatch(s):
                return KEEP
            return drop("regex_mismatch", f"{s[:80]!r} does not match {self.regex.pattern!r}")
        if self.mode == "labels":
            return self._check_label(text)
        return KEEP

    def _check_json(self, text: str) -> Verdict:
        update = {}
        inner = unwrap_fence(text)
        if inner is not None:
            if not self.config.format.unwrap_code_fences:
                return drop("code_fence", "JSON wrapped in a markdown code fence")
            text = update["response"] = inner.strip()
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, ValueError) as e:
            return drop("invalid_json", f"{e}; output starts {text.strip()[:60]!r}")
        if self._validator is not None:
            from jsonschema.exceptions import best_match

            err = best_match(self._validator.iter_errors(value))
            if err is not None:
                where = "/".join(str(p) for p in err.absolute_path) or "(root)"
                return drop("schema_violation", f"{err.message[:200]} at {where}")
        return Verdict(True, update=update)

    def _check_label(self, text: str) -> Verdict:
        field = self.config.format.label_field
        if field:
            ok, value = parse_json(text, allow_fence=self.config.format.unwrap_code_fences)
            if not ok or not isinstance(value, dict):
                return drop("invalid_json", f"expected a JSON object with {field!r}; output starts {text.strip()[:60]!r}")
            label = value.get(field)
        else:
            label = text.strip()
        if label in self._label_set:
            return KEEP
        return drop("unknown_label", f"{str(label)[:80]!r} is not an allowed label")
