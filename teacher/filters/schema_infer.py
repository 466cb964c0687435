"""Infer a JSON Schema from the majority of teacher outputs.

When the user gave no schema but the teacher answers in JSON, the majority shape is the format:
the key set most outputs share, each key's majority value type, and an enum for low-cardinality
string fields (labels). Outputs that stray from it (extra keys, a one-off label) are dropped.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from teacher.filter_config import FormatFilterConfig


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _majority_type(values: list[Any]) -> str:
    types = Counter(json_type(v) for v in values)
    # 3 and 3.5 are both numbers: a float-valued field with some whole values is still "number".
    if "integer" in types and "number" in types:
        types["number"] += types.pop("integer")
    return types.most_common(1)[0][0]


def _value_schema(values: list[Any], cfg: FormatFilterConfig) -> dict:
    t = _majority_type(values)
    schema: dict[str, Any] = {"type": t}
    if t == "string":
        counts = Counter(v for v in values if isinstance(v, str))
        distinct = len(counts)
        if distinct <= cfg.enum_max_distinct and distinct <= cfg.enum_max_ratio * len(values):
            enum = sorted(v for v, c in counts.items() if c >= cfg.enum_min_count)
            if enum:
                schema["enum"] = enum
    return schema


def infer_schema(values: list[Any], cfg: FormatFilterConfig) -> dict | None:
    """A JSON Schema for the majority shape of `values` (parsed outputs), or None if there are none."""
    if not values:
        return None
    top = _majority_type(values)
    if top != "object":
        return _value_schema(values, cfg)
    objs = [v for v in values if isinstance(v, dict)]
    key_counts = Counter(k for o in objs for k in o)
    keys = sorted(k for k, c in key_counts.items() if c / len(objs) > cfg.infer_key_share)
    props = {k: _value_schema([o[k] for o in objs if k in o], cfg) for k in keys}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "inferred from teacher outputs",
        "type": "object",
        "properties": props,
        "required": keys,
        "additionalProperties": cfg.infer_allow_extra_keys,
    }
