"""The student kinds: kind name -> the class that trains, saves and loads it.

Its own module so the protocol (student/base.py) and the config import no kind: classes load
lazily by name (importlib), so reading a config or a student.json never imports torch.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from core.base import DistillError
from core.rundir import STUDENT_META

KINDS: dict[str, str] = {
    "classifier": "student.classifier:ClassifierStudent",
    "causal_lm": "student.causal_lm:CausalLMStudent",
}


def student_class(kind: str) -> Any:
    """The class for `kind` (imports its module on first use)."""
    if kind not in KINDS:
        raise DistillError(f"unknown student kind {kind!r} (known: {', '.join(KINDS)})")
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def load_student(path: str | Path) -> Any:
    """Load any saved student (a student.base.Student) by reading its kind from student.json."""
    path = Path(path)
    meta_file = path / STUDENT_META
    if not meta_file.is_file():
        raise DistillError(f"{path} is not a saved student (no {STUDENT_META})")
    meta = json.loads(meta_file.read_text())
    kind = meta.get("kind")
    if kind not in KINDS:
        raise DistillError(f"{meta_file}: unknown student kind {kind!r}")
    if kind == "classifier" and meta.get("tool_fields"):  # a classifier of tool calls (student/toolcall_shape.py)
        from student.toolcall_shape import tool_fields_class

        return tool_fields_class().load(path)
    return student_class(kind).load(path)
