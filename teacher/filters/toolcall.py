"""Tool calls against the tools the request declared: name, required and unknown arguments, types.

A teacher's call to a tool that does not exist, or with arguments its schema rejects, would teach
the student to make the same call; in production it is an error the caller has to handle.
Records the teacher answered in text pass (counted by `tool_usage` for the data report), unless
the request's `tool_choice` demanded a call.

Reads the canonical replay record (core/toolcalls.py): "tools" (OpenAI function tools) and
"tool_calls" ([{"id", "name", "arguments": dict}]) beside "response". Parameter schemas may use
BFCL's Python-flavoured types ("dict", "float", "tuple", "any"); they are read as JSON Schema's.
"""
from __future__ import annotations

import copy
from collections import Counter
from typing import Any

from core.base import stable_hash
from core.toolcalls import ToolCallError, parse_arguments, tool_parameters
from teacher.filter_config import ToolCallFilterConfig
from teacher.filters.base import KEEP, Filter, Verdict, drop

__all__ = ["ToolCallFilter", "ToolCallFilterConfig", "json_schema", "tool_usage"]


# Python-flavoured names some tool catalogues (BFCL) use for JSON Schema types; "any" means no constraint.
_TYPE_ALIASES = {"dict": "object", "float": "number", "double": "number", "tuple": "array", "list": "array",
                 "bool": "boolean", "int": "integer", "long": "integer", "str": "string", "any": None}
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")


def json_schema(params: Any) -> Any:
    """A tool's parameters schema with the type aliases mapped (a copy; the record is untouched)."""
    if not isinstance(params, dict):
        return params
    out = dict(params)
    t = out.get("type")
    if isinstance(t, str) and t in _TYPE_ALIASES:
        if _TYPE_ALIASES[t] is None:
            del out["type"]
        else:
            out["type"] = _TYPE_ALIASES[t]
    elif isinstance(t, list):
        mapped = [_TYPE_ALIASES.get(x, x) if isinstance(x, str) else x for x in t]
        if None in mapped:
            del out["type"]
        else:
            out["type"] = mapped
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: json_schema(v) for k, v in out[key].items()}
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [json_schema(v) for v in out[key]]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = json_schema(out[key])
        elif key == "items" and isinstance(out.get(key), list):
            out[key] = [json_schema(v) for v in out[key]]
    return out


def _allows_extra(schema: dict) -> bool:
    extra = schema.get("additionalProperties")
    return extra is True or isinstance(extra, dict) or bool(schema.get("patternProperties"))


class ToolCallFilter(Filter):
    name = "tool_call"

    def __init__(self, config: ToolCallFilterConfig | None = None):
        super().__init__(config or ToolCallFilterConfig())
        self._validators: dict[str, Any] = {}
        self._bad_schemas: set[str] = set()
        self._meta: dict[type, Any] = {}
        self._no_tools = False

    @property
    def active(self) -> bool:
        return bool(self.config.enabled) and not self._no_tools

    def setup(self, records: list[dict]) -> None:
        with_calls = sum(bool(r.get("tool_calls")) for r in records)
        if not with_calls and not any(r.get("tools") for r in records):
            self._no_tools = True  # nothing declares or calls a tool: not a tool-calling data set
            self.note = "no tools declared: no check"
            return
        self.note = f"{with_calls} answers with tool calls checked against their declared tools"

    def _validator(self, schema: dict, tool: str):
        from jsonschema import Draft202012Validator
        from jsonschema.validators import validator_for

        key = stable_hash(schema)
        if key not in self._validators:
            cls = validator_for(schema, default=Draft202012Validator)
            # One metaschema validator per draft: check_schema builds a new one every call (4x slower).
            meta = self._meta.setdefault(cls, cls(cls.META_SCHEMA))
            if next(meta.iter_errors(schema), None) is None:
                self._validators[key] = cls(schema)
            else:
                # The log's schema is broken, not the teacher's answer: check names only, say so.
                self._validators[key] = None
                self._bad_schemas.add(tool)
                self.note += f"; tool {tool!r} has an invalid JSON Schema (types not checked)"
        return self._validators[key]

    def check(self, record: dict) -> Verdict:
        calls = record.get("tool_calls") or []
        choice = record.get("tool_choice")
        if self.config.enforce_tool_choice:
            v = self._check_choice(calls, choice)
            if v is not None:
                return v
        if not calls:
            return KEEP
        params = tool_parameters(record.get("tools"))
        declared = ", ".join(list(params)[:8]) or "no tools"
        for j, call in enumerate(calls, 1):
            name = call.get("name") if isinstance(call, dict) else None
            where = f"call {j} ({name})"
            if name not in params:
                return drop("undeclared_tool", f"call {j} names {str(name)[:60]!r}; the request declares {declared}")
            try:
                args = parse_arguments(call.get("arguments"), where)
            except ToolCallError as e:
                return drop("invalid_arguments", e.detail)
            schema = json_schema(copy.deepcopy(params[name]))
            props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
            missing = [p for p in schema.get("required") or [] if p not in args]
            if missing:
                return drop("missing_argument", f"{where} lacks required {', '.join(map(repr, missing[:5]))}")
            if not self.config.allow_unknown_arguments and not _allows_extra(schema):
                unknown = [p for p in args if p not in props]
                if unknown:
                    return drop("unknown_argument", f"{where} passes {', '.join(repr(p[:40]) for p in unknown[:5])}, not in the tool's schema")
            if self.config.check_types:
                v = self._check_types(args, schema, name, where)
                if v is not None:
                    return v
        return KEEP

    def _check_types(self, args: dict, schema: dict, name: str, where: str) -> Verdict | None:
        from jsonschema.exceptions import best_match

        validator = self._validator(schema, name)
        if validator is None:
            return None
        err = best_match(validator.iter_errors(args))
        if err is None:
            return None
        path = "/".join(str(p) for p in err.absolute_path) or "(arguments)"
        code = "argument_type" if err.validator == "type" else "argument_invalid"
        return drop(code, f"{where} argument {path}: {err.message[:200]}")

    @staticmethod
    def _check_choice(calls: list, choice: Any) -> Verdict | None:
        if choice == "required" and not calls:
            return drop("tool_choice_violated", "tool_choice is 'required' but the answer calls no tool")
        if choice == "none" and calls:
            return drop("tool_choice_violated", "tool_choice is 'none' but the answer calls a tool")
        if isinstance(choice, dict):
            want = (choice.get("function") or {}).get("name")
            if not calls:
                return drop("tool_choice_violated", f"tool_choice names {want!r} but the answer calls no tool")
            other = [c.get("name") for c in calls if isinstance(c, dict) and c.get("name") != want]
            if other:
                return drop("tool_choice_violated", f"tool_choice names {want!r} but the answer calls {str(other[0])[:60]!r}")
        return None


def tool_usage(records: list[dict]) -> dict:
    """For the data report: calls per tool, and how often a request with tools got text instead."""
    per_tool: Counter[str] = Counter()
    with_tools = text_answers = parallel = 0
    for r in records:
        calls = r.get("tool_calls") or []
        per_tool.update(c.get("name") for c in calls if isinstance(c, dict))
        parallel += len(calls) > 1
        if r.get("tools"):
            with_tools += 1
            text_answers += not calls
    return {"requests_with_tools": with_tools, "text_answers": text_answers,
            "text_answer_share": text_answers / with_tools if with_tools else None,
            "parallel_call_answers": parallel, "calls_per_tool": dict(per_tool.most_common())}
