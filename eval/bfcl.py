"""BFCL v4 data as tool-calling prompts: read the `bfcl-eval` package's files, convert them as BFCL does.

The Berkeley Function Calling Leaderboard (Apache-2.0, https://gorilla.cs.berkeley.edu) ships its
test items and possible answers inside the PyPI package `bfcl-eval`. Its function docs use
Python-flavoured types ("dict", "float", "tuple", "any") and dotted names; for an OpenAI-style
model BFCL converts them (model_handler/utils.py: convert_to_tool with GORILLA_TO_OPENAPI):
dots become underscores, types become JSON-schema types, a float gets `format: float` and a note
in its description. We do the same, so a student sees what BFCL's function-calling models see,
and rename the possible answers' calls to match.

Only the package's data files are read; nothing of bfcl_eval is imported.
"""
from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path

from core.base import DistillError

# Single-turn categories whose possible answers the AST checker scores.
CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple")
VERSION_PREFIX = "BFCL_v4"

GORILLA_TO_OPENAPI = {
    "integer": "integer", "number": "number", "float": "number", "string": "string", "boolean": "boolean",
    "bool": "boolean", "array": "array", "list": "array", "dict": "object", "object": "object", "tuple": "array",
    "any": "string", "byte": "integer", "short": "integer", "long": "integer", "double": "number", "char": "string",
    "ArrayList": "array", "Array": "array", "HashMap": "object", "Hashtable": "object", "Queue": "array",
    "Stack": "array", "Any": "string", "String": "string", "Bigint": "integer",
}


def data_dir() -> Path:
    try:
        root = resources.files("bfcl_eval") / "data"
    except ModuleNotFoundError:
        raise DistillError("the BFCL data needs the package bfcl-eval (pip install --no-deps bfcl-eval==2026.3.23)") from None
    return Path(str(root))


def _read_lines(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_category(category: str, root: Path | None = None) -> list[dict]:
    """Items {"id", "question", "function", "ground_truth"} of one category, in file order."""
    root = root or data_dir()
    items = _read_lines(root / f"{VERSION_PREFIX}_{category}.json")
    answers = {a["id"]: a["ground_truth"] for a in _read_lines(root / "possible_answer" / f"{VERSION_PREFIX}_{category}.json")}
    missing = [it["id"] for it in items if it["id"] not in answers]
    if missing:
        raise DistillError(f"BFCL {category}: no possible answer for {missing[:3]}")
    return [{**it, "ground_truth": answers[it["id"]]} for it in items]


def openai_name(name: str) -> str:
    # OpenAI function names must match ^[a-zA-Z0-9_-]{1,64}$.
    return re.sub(r"\.", "_", name)


def _cast_types(properties: dict) -> dict:
    """BFCL's _cast_to_openai_type: JSON-schema types, nested properties and items one level down."""
    for value in properties.values():
        t = value.get("type")
        if t is None:
            value["type"] = "string"
        else:
            if t == "float":
                value["format"] = "float"
                value["description"] = value.get("description", "") + " This is a float type value."
            value["type"] = GORILLA_TO_OPENAPI.get(t, "string")
        if value["type"] in ("array", "object"):
            if "properties" in value:
                value["properties"] = _cast_types(value["properties"])
            elif "items" in value:
                items = value["items"]
                items["type"] = GORILLA_TO_OPENAPI[items["type"]]
                if items["type"] == "array" and "items" in items:
                    items["items"]["type"] = GORILLA_TO_OPENAPI[items["items"]["type"]]
                elif items["type"] == "object" and "properties" in items:
                    items["properties"] = _cast_types(items["properties"])
    return properties


def openai_tools(functions: list[dict]) -> list[dict]:
    """BFCL function docs as OpenAI chat `tools`."""
    out = []
    for fn in copy.deepcopy(functions):
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        params["type"] = "object"
        params["properties"] = _cast_types(params.get("properties") or {})
        body = {"name": openai_name(fn["name"])}
        if "description" in fn:
            body["description"] = fn["description"]
        body["parameters"] = params
        out.append({"type": "function", "function": body})
    return out


def openai_answers(ground_truth: list[dict]) -> list[dict]:
    """Possible answers with the calls renamed as openai_tools renames the tools."""
    return [{openai_name(name): args for name, args in call.items()} for call in ground_truth]
