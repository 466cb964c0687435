"""Tool-call metrics with the semantics of the Berkeley Function Calling Leaderboard's AST checker.

An expected answer is BFCL's possible-answer form: a list of calls, each {tool name: {argument:
[acceptable values]}}; "" among the acceptable values means the argument may be left out, a
dict-typed argument's acceptable values are dicts of such lists (one level deep, as in BFCL).
`answers_from_calls` turns a concrete teacher answer into that form.

The rules are bfcl_eval/eval_checker/ast_eval/ast_checker.py's (2026.3.23), kept on purpose,
quirks included, so our figures are the field's (tests/eval/test_toolcall_metrics.py checks
agreement on every BFCL item of the four categories we use): the call count must match; parallel
calls match order-free, greedily (each expected call takes the first unmatched model call that
matches it); strings compare after dropping spaces and ,./-_*^ and lower-casing; an int is
accepted for a float; a value of the acceptable values' type where the schema says another type
is a "variable" and compared as is; no argument outside the schema or the expected answer.
Beyond BFCL: JSON-schema type names ("number", "object") and properties without a type.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_PY_TYPES = {"string": str, "integer": int, "float": float, "number": float, "boolean": bool,
             "array": list, "tuple": list, "dict": dict, "object": dict, "any": str}
_NESTED = ("array", "tuple")
_STD = re.compile(r"[ \,\.\/\-\_\*\^]")


def standardize_string(s: str) -> str:
    return _STD.sub("", s).lower().replace("'", '"')


def _std(v: Any) -> Any:
    return standardize_string(v) if type(v) is str else v


# ---- one argument ---------------------------------------------------------------------------

def _type_check(value: Any, acceptable: list, expected: type, nested: type | None) -> tuple[bool, bool, str | None]:
    """(valid, is_variable, error_type), as BFCL's type_checker."""
    pa_type = next((type(a) for a in acceptable if a != ""), None)
    is_variable = pa_type is not None and pa_type != expected
    nested_failed = False
    if type(value) is expected:
        if nested is None:
            return True, is_variable, None
        for item in acceptable:
            if type(item) is list and not all(_type_check(v, item, nested, None)[0] for v in value):
                continue
            return True, is_variable, None
        nested_failed = True
    if pa_type is not None and type(value) is pa_type:
        return (False, True, "type_error:nested") if nested_failed else (True, True, None)
    return False, False, "type_error:simple"


def _dict_check(value: dict, acceptable: list) -> str | None:
    err = "dict_checker:unclear"
    for a in acceptable:
        if a == "" or not isinstance(a, dict):
            continue
        err = None
        for k, v in value.items():
            if k not in a:
                err = "value_error:dict_key"
                break
            if _std(v) not in [_std(x) for x in a[k]]:
                err = "value_error:dict_value"
                break
        # BFCL checks for missing keys even after a bad value (the error type is then dict_key).
        if any(k not in value and "" not in vals for k, vals in a.items()):
            err = "value_error:dict_key"
        if err is None:
            return None
    return err


def _list_dict_check(value: list, acceptable: list) -> str | None:
    err = "list_dict_checker:unclear"
    for a in acceptable:
        if not isinstance(a, (list, str)):
            continue
        if len(value) != len(a):  # BFCL takes len(""): an empty list matches the optional marker
            err = "value_error:list_dict_count"
            continue
        ok = True
        for v, d in zip(value, a):
            err = _dict_check(v, [d]) if isinstance(v, dict) else "value_error:dict_value"
            if err:
                ok = False
                break
        if ok:
            return None
    return err


def _list_check(value: list, acceptable: list) -> str | None:
    std = [_std(v) for v in value]
    options = [[_std(x) for x in a] for a in acceptable if isinstance(a, (list, str))]
    return None if std in options else "value_error:list/tuple"


def check_argument(value: Any, acceptable: list, prop: dict | None) -> str | None:
    """None when `value` is acceptable for this argument, else BFCL's error type."""
    desc = (prop or {}).get("type")
    expected = _PY_TYPES.get(desc) if isinstance(desc, str) else None
    nested = None
    if desc in _NESTED:
        items = (prop or {}).get("items") or {}
        nested = _PY_TYPES.get(items.get("type")) if isinstance(items.get("type"), str) else None
    if desc in ("float", "number") and type(value) is int:
        value = float(value)
    is_variable = False
    if expected is not None:
        ok, is_variable, err = _type_check(value, acceptable, expected, nested)
        if not ok:
            return err
    kind = expected if expected is not None else type(value)
    if not is_variable:
        if kind is dict:
            return _dict_check(value, acceptable) if isinstance(value, dict) else "value_error:others"
        if kind is list and nested is dict:
            return _list_dict_check(value, acceptable)
        if kind is str and type(value) is str:
            return None if standardize_string(value) in [standardize_string(a) for a in acceptable if type(a) is str] else "value_error:string"
        if kind is list and type(value) is list:
            return _list_check(value, acceptable)
    return None if value in acceptable else "value_error:others"


# ---- one call -------------------------------------------------------------------------------

@dataclass
class CallCheck:
    valid: bool
    error_type: str | None = None
    # Per expected argument (and per unexpected one the call gave): correct or not.
    args: dict[str, bool] = field(default_factory=dict)


def schemas_by_name(tools: list[dict] | None) -> dict[str, dict]:
    """{name: parameters schema} from OpenAI tools or BFCL/legacy flat function docs."""
    out = {}
    for t in tools or []:
        fn = t.get("function", t) if isinstance(t, dict) else {}
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn.get("parameters") or {}
    return out


def check_call(call: dict, answer: dict, schema: dict | None) -> CallCheck:
    """One model call against one expected call ({name: {arg: [acceptable]}}), BFCL's simple checker."""
    (name, expected), = answer.items()
    schema = schema or {}
    props = schema.get("properties") or {}
    given = call.get("arguments") or {}
    per_arg = {}
    for p, acceptable in expected.items():
        per_arg[p] = (check_argument(given[p], acceptable, props.get(p)) is None) if p in given else ("" in acceptable)
    for p in given:
        if p not in expected or p not in props:
            per_arg[p] = False
    if call.get("name") != name:
        return CallCheck(False, "simple_function_checker:wrong_func_name", per_arg)
    for p in schema.get("required") or []:
        if p not in given:
            return CallCheck(False, "simple_function_checker:missing_required", per_arg)
    for p, v in given.items():
        if p not in props or p not in expected:
            return CallCheck(False, "simple_function_checker:unexpected_param", per_arg)
        err = check_argument(v, expected[p], props.get(p))
        if err:
            return CallCheck(False, err, per_arg)
    for p, acceptable in expected.items():
        if p not in given and "" not in acceptable:
            return CallCheck(False, "simple_function_checker:missing_optional", per_arg)
    return CallCheck(True, None, per_arg)


# ---- a whole answer -------------------------------------------------------------------------

@dataclass
class ItemScore:
    expected_call: bool          # the reference answered with calls (else with text)
    predicted_call: bool
    exact: bool                  # AST match (both call) or both answered in text
    name_match: bool             # the same multiset of tool names
    args_correct: int
    args_total: int
    n_expected: int              # > 1: a parallel item
    error_type: str | None = None


def match_calls(calls: list[dict], answers: list[dict], tools: list[dict] | None, greedy: bool = True) -> tuple[bool, str | None]:
    """(valid, error_type): the counts equal, and every expected call matched by its own model call.

    greedy=True is BFCL's rule: each expected call, in order, takes the first unmatched call that
    matches it, so an expected call with several acceptable values can take the call a later one
    needed and fail a correct answer (BFCL parallel_178 with its calls reversed). greedy=False
    finds a full matching whenever one exists.
    """
    if len(calls) != len(answers):
        return False, "wrong_count"
    schemas = schemas_by_name(tools)
    fits = [[check_call(c, a, schemas.get(next(iter(a)))).valid for c in calls] for a in answers]
    owner: dict[int, int] = {}   # call index -> expected index

    def place(j: int, seen: set[int]) -> bool:  # Kuhn's augmenting path
        for i, ok in enumerate(fits[j]):
            if ok and i not in seen:
                seen.add(i)
                if i not in owner or (not greedy and place(owner[i], seen)):
                    owner[i] = j
                    return True
        return False

    for j, a in enumerate(answers):
        if not place(j, set()):
            if len(answers) == 1:
                return False, check_call(calls[0], a, schemas.get(next(iter(a)))).error_type
            return False, "cannot_find_match"
    return True, None


def _argument_counts(calls: list[dict], answers: list[dict], schemas: dict[str, dict]) -> tuple[int, int]:
    """Per-argument (correct, total): each expected call paired with the same-named call that gets most right."""
    correct = total = 0
    free = list(range(len(calls)))
    for a in answers:
        name, expected = next(iter(a.items()))
        best, best_args = None, None
        for i in free:
            if calls[i].get("name") == name:
                args = check_call(calls[i], a, schemas.get(name)).args
                if best is None or sum(args.values()) > sum(best_args.values()):
                    best, best_args = i, args
        if best is None:
            total += len(expected)
            continue
        free.remove(best)
        correct += sum(best_args.values())
        total += len(best_args)
    return correct, total


def score_item(calls: list[dict] | None, answers: list[dict] | None, tools: list[dict] | None) -> ItemScore:
    """One prediction (calls, or None/[] for a text answer) against the expected answer ([] = text)."""
    calls, answers = list(calls or []), list(answers or [])
    if not answers:
        return ItemScore(False, bool(calls), not calls, not calls, 0, 0, 0, "called_when_text" if calls else None)
    if not calls:
        return ItemScore(True, False, False, False, 0, sum(len(next(iter(a.values()))) for a in answers), len(answers), "text_when_call")
    valid, err = match_calls(calls, answers, tools)
    names_ok = Counter(c.get("name") for c in calls) == Counter(next(iter(a)) for a in answers)
    correct, total = _argument_counts(calls, answers, schemas_by_name(tools))
    return ItemScore(True, True, valid, names_ok, correct, total, len(answers), err)


def _rate(xs: list[bool]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def summarize(scores: list[ItemScore]) -> dict:
    """The tool-call figures for a report; a rate is None when no item counts towards it."""
    call = [s for s in scores if s.expected_call]
    text = [s for s in scores if not s.expected_call]
    args_total = sum(s.args_total for s in call)
    return {
        "n": len(scores), "n_call_expected": len(call), "n_text_expected": len(text),
        "accuracy": _rate([s.exact for s in scores]),
        "ast_exact_match": _rate([s.exact for s in call]),
        "tool_name_accuracy": _rate([s.name_match for s in call]),
        "per_argument_accuracy": sum(s.args_correct for s in call) / args_total if args_total else None,
        "parallel_set_match": _rate([s.exact for s in call if s.n_expected > 1]),
        "n_parallel": sum(s.n_expected > 1 for s in call),
        "called_when_text_rate": _rate([s.predicted_call for s in text]),
        "text_when_call_rate": _rate([not s.predicted_call for s in call]),
        "errors": dict(Counter(s.error_type for s in scores if s.error_type and not s.exact)),
    }


# ---- concrete answers <-> possible answers --------------------------------------------------

def _prop_kind(prop: dict | None) -> str | None:
    prop = prop or {}
    t = prop.get("type")
    if t in ("dict", "object"):
        return "dict"
    if t in _NESTED and (prop.get("items") or {}).get("type") in ("dict", "object"):
        return "list_dict"
    return None


def answers_from_calls(calls: list[dict] | None, tools: list[dict] | None) -> list[dict]:
    """A concrete answer (the teacher's calls) as possible answers: the value given, or absent (or the default)."""
    schemas = schemas_by_name(tools)
    out = []
    for c in calls or []:
        props = (schemas.get(c["name"]) or {}).get("properties") or {}
        args = c.get("arguments") or {}
        exp: dict[str, list] = {}
        for p, v in args.items():
            kind = _prop_kind(props.get(p))
            if kind == "dict" and isinstance(v, dict):
                exp[p] = [{k: [x] for k, x in v.items()}]
            elif kind == "list_dict" and isinstance(v, list) and all(isinstance(d, dict) for d in v):
                exp[p] = [[{k: [x] for k, x in d.items()} for d in v]]
            else:
                exp[p] = [v]
        for p, prop in props.items():
            if p not in args:
                exp[p] = [""] + ([prop["default"]] if isinstance(prop, dict) and "default" in prop else [])
        out.append({c["name"]: exp})
    return out


def _first(acceptable: list) -> tuple[bool, Any]:
    if not acceptable or acceptable[0] == "":
        return False, None
    return True, acceptable[0]


def _concrete_dict(d: dict) -> dict:
    return {k: v for k, (ok, v) in ((k, _first(vals)) for k, vals in d.items()) if ok}


def calls_from_answers(answers: list[dict], tools: list[dict] | None = None) -> list[dict]:
    """The first acceptable value of every argument, optional ones ("" first) left out: a reference answer."""
    schemas = schemas_by_name(tools)
    out = []
    for a in answers:
        (name, expected), = a.items()
        props = (schemas.get(name) or {}).get("properties") or {}
        args = {}
        for p, acceptable in expected.items():
            ok, v = _first(acceptable)
            if not ok:
                continue
            kind = _prop_kind(props.get(p))
            if kind == "dict" and isinstance(v, dict):
                v = _concrete_dict(v)
            elif kind == "list_dict" and isinstance(v, list):
                v = [_concrete_dict(d) if isinstance(d, dict) else d for d in v]
            args[p] = v
        out.append({"name": name, "arguments": args})
    return out
