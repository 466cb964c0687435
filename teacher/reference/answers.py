"""The reference teacher's answers file: rows {"id", "user", "response", "tool_calls"?, "tools"?},
indexed by user text (exact and normalised) and by (normalised user text, tool set)."""
from __future__ import annotations

from pathlib import Path

from core.base import DistillError, read_jsonl
from core.toolcalls import ToolCallError, parse_tool_calls
from teacher.textutil import normalise


def load_answers(path: str | Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Reference answers keyed by exact user text and by normalised user text."""
    exact, norm, _ = load_answer_index(path)
    return exact, norm


def load_answer_index(path: str | Path) -> tuple[dict[str, dict], dict[str, dict], dict[tuple, dict]]:
    """(by exact user text, by normalised user text, by (normalised user text, tool names)).

    A row is {"id", "user", "response": text, "tool_calls"?: [{"name", "arguments"}], "tools"?:
    the request's tool names (or OpenAI tools)}. With "tools", the row answers only a request
    declaring exactly that tool set: a tool-calling log asks the same question with different
    tools (BFCL does, 96 times), and the answer depends on which tools are there."""
    p = Path(path)
    if not p.is_file():
        raise DistillError(f"reference answers file not found: {p}")
    exact: dict[str, dict] = {}
    norm: dict[str, dict] = {}
    by_tools: dict[tuple, dict] = {}
    for i, row in enumerate(read_jsonl(p), 1):
        calls = row.get("tool_calls") if isinstance(row, dict) else None
        if not isinstance(row, dict) or not isinstance(row.get("user"), str) or not isinstance(row.get("response", "" if calls else None), str):
            raise DistillError(f"{p}: line {i} needs string fields 'user' and 'response' (or 'tool_calls')")
        entry: dict = {"id": str(row.get("id", i)), "response": row.get("response") or ""}
        if calls:
            try:
                entry["tool_calls"] = parse_tool_calls({"tool_calls": calls}, f"line {i}")
            except ToolCallError as e:
                raise DistillError(f"{p}: line {i}: {e}") from None
        names = tool_set_names(row.get("tools"))
        if names is not None:
            by_tools.setdefault((normalise(row["user"]), names), entry)
        exact.setdefault(row["user"], entry)
        norm.setdefault(normalise(row["user"]), entry)
    return exact, norm, by_tools


def tool_set_names(tools) -> tuple[str, ...] | None:
    """A tool set as sorted names, from names or OpenAI tools (chat or flat form)."""
    if not isinstance(tools, list):
        return None
    out = []
    for t in tools:
        if isinstance(t, str):
            out.append(t)
        elif isinstance(t, dict):
            fn = t.get("function") if isinstance(t.get("function"), dict) else t
            if isinstance(fn.get("name"), str):
                out.append(fn["name"])
    return tuple(sorted(out))
