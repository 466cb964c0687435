"""How a student reads tools and writes tool calls (issue #12).

One canonical *answer text* carries an answer that calls tools, everywhere answers are strings
(Example.target, predict(), predictions.jsonl, the eval's agreement, val_scores):

    [content + "\\n"]<tool_call>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_call>

It is the documented format of the SmolLM2 family's function calling (a `<tool_call>` tag around a
JSON list of {"name", "arguments"}; SmolLM2-1.7B-Instruct's model card), which is also what the
causal LM learns when its chat template has no tool format of its own: SmolLM2-135M-Instruct's
template (plain ChatML) has none. An answer without calls is its text, unchanged.

Tools in the prompt (ToolFormat):
- "json" (documented): the tools' function objects go into the system turn inside <tools></tools>
  with one line on how to call them; earlier assistant calls are written in the answer format,
  tool results as user turns in <tool_response></tool_response>.
- "template": a template that renders `tools` itself (Qwen2.5, Llama 3.1, Hermes...) gets them
  through apply_chat_template(tools=...), and the answer is written the way the template writes an
  assistant turn with tool_calls. It is chosen only when that rendering parses back to the same
  calls (parse_calls); else the documented format is used, and the reason is kept.
- A fixed tool list with instruction baking (bake_system_prompt) is learned, not sent: the tools
  are left out of the prompt when a request declares exactly those tools (or none).
"""
from __future__ import annotations

import json
import re
from typing import Any

from core.base import stable_hash

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.S)

TOOL_SYSTEM = ("You can call these tools (JSON schemas):\n<tools>\n{tools}\n</tools>\n"
               'To call tools, answer only with <tool_call>[{{"name": <tool name>, "arguments": {{<argument>: <value>}}}}]</tool_call> '
               "(one list, several calls allowed); otherwise answer in plain text.")


# ---- the canonical answer text --------------------------------------------------------------

def _plain_calls(calls: list[dict] | None) -> list[dict]:
    return [{"name": c["name"], "arguments": c.get("arguments") or {}} for c in calls or []]


def answer_text(content: str | None, calls: list[dict] | None) -> str:
    """The canonical answer text for an answer's text and canonical calls (see the module doc)."""
    if not calls:
        return content or ""
    body = OPEN + json.dumps(_plain_calls(calls), ensure_ascii=False) + CLOSE
    return f"{content.rstrip()}\n{body}" if content and content.strip() else body


def _call(obj: Any) -> dict | None:
    if not isinstance(obj, dict):
        return None
    fn = obj.get("function") if isinstance(obj.get("function"), dict) else obj
    name = fn.get("name")
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        return None
    return {"name": name, "arguments": args}


def _json_values(s: str) -> list[Any] | None:
    """Every JSON value in `s`, one after another (whitespace/commas between); None if any does not parse."""
    dec, out, i = json.JSONDecoder(), [], 0
    while True:
        while i < len(s) and s[i] in " \t\r\n,;":
            i += 1
        if i >= len(s):
            return out
        try:
            v, i = dec.raw_decode(s, i)
        except ValueError:
            return None
        out.append(v)


def parse_calls(text: str) -> dict:
    """{"content", "tool_calls", "error"} read off a model's answer text.

    Reads `<tool_call>` blocks (a JSON list of calls or one call per block; a block the length
    limit cut has no closing tag), or, when there is none, an answer that is nothing but JSON
    calls ({"name", "arguments"|"parameters"}: Llama 3.1's form). A block that does not parse
    gives tool_calls None and error "unparsed_tool_call" (the text is kept as content)."""
    blocks = _BLOCK.findall(text)
    if not blocks:
        s = text.strip()
        vals = _json_values(s) if s[:1] in "[{" else None
        if vals:
            items = [x for v in vals for x in (v if isinstance(v, list) else [v])]
            calls = [_call(x) for x in items]
            if items and all(calls):
                return {"content": None, "tool_calls": calls, "error": None}
        return {"content": text, "tool_calls": None, "error": None}
    calls: list[dict] = []
    for b in blocks:
        vals = _json_values(b.strip())
        items = [x for v in vals or [] for x in (v if isinstance(v, list) else [v])]
        parsed = [_call(x) for x in items]
        if not vals or not all(parsed):
            return {"content": text, "tool_calls": None, "error": "unparsed_tool_call"}
        calls.extend(parsed)  # type: ignore[arg-type]
    content = text[: text.find(OPEN)].strip() or None
    return {"content": content, "tool_calls": calls or None, "error": None if calls else "unparsed_tool_call"}


def split_answer(text: str | None) -> tuple[str | None, list[dict] | None]:
    """(content, calls) of a canonical answer text; calls None for a text answer."""
    if text is None:
        return None, None
    p = parse_calls(text)
    return (p["content"], p["tool_calls"]) if p["tool_calls"] else (text, None)


def row_answer_text(row: dict) -> str:
    """The canonical answer text of a filtered row ({"response", "tool_calls"} per core/toolcalls.py)."""
    resp = row.get("response")
    return answer_text(resp if isinstance(resp, str) else None, row.get("tool_calls"))


def answer_rows(rows) -> list[dict]:
    """Rows that have an answer, each "response" as canonical answer text (calls included)."""
    return [{**r, "response": row_answer_text(r)} if r.get("tool_calls") or r.get("tools") else r
            for r in rows if r.get("response") is not None or r.get("tool_calls")]


def tools_key(tools: list[dict] | None) -> str | None:
    return stable_hash(tools) if tools else None


def fixed_tools(tool_lists: list[list[dict] | None]) -> list[dict] | None:
    """The one tool list every example declares, or None (no tools, or they differ)."""
    keys = {tools_key(t) for t in tool_lists}
    return next((t for t in tool_lists if t), None) if len(keys) == 1 and None not in keys else None


def answer_row(student: Any, text: str) -> dict:
    """A `distill predict` output line's answer: {"response": text}, or for calls {"response":
    content or None, "tool_calls": OpenAI tool_calls, "finish_reason": "tool_calls"}."""
    from core.toolcall_render import render_tool_calls

    dec = getattr(student, "decode_answer", None)
    content, calls = dec(text) if dec is not None and getattr(student, "accepts_tools", False) else (text, None)
    if not calls:
        return {"response": text}
    return {"response": content, "tool_calls": render_tool_calls(calls), "finish_reason": "tool_calls"}


def request_tools(obj: dict, where: str) -> list[dict] | None:
    """A request line's canonical tools (`tools` / legacy `functions`); DistillError naming the line."""
    from core.base import DistillError
    from core.toolcalls import ToolCallError, normalize_tools

    try:
        return normalize_tools(obj.get("tools"), obj.get("functions"))
    except ToolCallError as e:
        raise DistillError(f"{where}: {e}") from None


# ---- tools and tool turns in the prompt -----------------------------------------------------

def _functions(tools: list[dict]) -> list[dict]:
    return [t.get("function", t) for t in tools]


def _calls_of(m: dict) -> list[dict]:
    """A history turn's calls, canonical (OpenAI wire shape with JSON-string arguments accepted too)."""
    from core.toolcalls import parse_tool_calls

    return parse_tool_calls(m) or []


def documented_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """`messages` for a template without tools: tools in the system turn, calls and results as text."""
    out = []
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            out.append({"role": "assistant", "content": answer_text(m.get("content"), _calls_of(m))})
        elif role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"})
        else:
            out.append({"role": role, "content": m.get("content") if isinstance(m.get("content"), str) else str(m.get("content") or "")})
    if tools:
        text = TOOL_SYSTEM.format(tools=json.dumps(_functions(tools), ensure_ascii=False))
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": (out[0]["content"] + "\n\n" + text) if out[0]["content"] else text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _template_messages(messages: list[dict]) -> list[dict]:
    """OpenAI-ish messages with arguments as dicts (what HF chat templates expect)."""
    out = []
    for m in messages:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            m = {"role": "assistant", "content": m.get("content") or "",
                 "tool_calls": [{"type": "function", "id": c.get("id") or f"call_{j}",
                                 "function": {"name": c["name"], "arguments": c.get("arguments") or {}}} for j, c in enumerate(_calls_of(m))]}
        out.append(m)
    return out


_PROBE_TOOL = [{"type": "function", "function": {"name": "zz_probe_tool", "description": "probe",
                                                  "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]


class ToolFormat:
    """How one tokenizer's prompts carry tools and its answers carry calls (see the module doc)."""

    def __init__(self, mode: str, fixed: list[dict] | None = None, bake: bool = False, note: str = ""):
        self.mode, self.fixed, self.bake, self.note = mode, fixed, bake, note

    @classmethod
    def detect(cls, tok, eot_text: str, fixed: list[dict] | None = None, bake: bool = False) -> "ToolFormat":
        """"template" when the chat template renders tools and its tool-call turns parse back, else "json"."""
        probe = [{"role": "user", "content": "hi"}]
        try:
            shown = tok.apply_chat_template(probe, tools=_PROBE_TOOL, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # noqa: BLE001 - any template error means: no tool format of its own
            return cls("json", fixed, bake, f"documented <tool_call> format (the chat template failed with tools: {type(e).__name__})")
        if "zz_probe_tool" not in shown:
            return cls("json", fixed, bake, "documented <tool_call> format (the chat template has no tool format)")
        fmt = cls("template", fixed, bake)
        calls = [{"name": "zz_probe_tool", "arguments": {"q": "a b"}}, {"name": "zz_probe_tool", "arguments": {"q": "c"}}]
        try:
            back = parse_calls(fmt.completion(tok, probe, _PROBE_TOOL, answer_text(None, calls), eot_text))["tool_calls"]
        except Exception:  # noqa: BLE001
            back = None
        if back != calls:
            return cls("json", fixed, bake, "documented <tool_call> format (the template's tool-call turns do not parse back)")
        fmt.note = "the chat template's own tool format"
        return fmt

    def to_dict(self) -> dict:
        return {"mode": self.mode, "fixed_tools": self.fixed, "bake": self.bake, "note": self.note}

    @classmethod
    def from_dict(cls, d: dict) -> "ToolFormat":
        return cls(d["mode"], d.get("fixed_tools"), bool(d.get("bake")), d.get("note", ""))

    def shown_tools(self, tools: list[dict] | None) -> list[dict] | None:
        """The tools rendered into the prompt: none for the fixed, baked tool list."""
        if self.bake and self.fixed and (not tools or tools_key(tools) == tools_key(self.fixed)):
            return None
        return tools or None

    def prompt(self, tok, messages: list[dict], tools: list[dict] | None) -> str:
        tools = self.shown_tools(tools)
        if self.mode == "template":
            kw = {"tools": tools} if tools else {}
            return tok.apply_chat_template(_template_messages(messages), tokenize=False, add_generation_prompt=True, **kw)
        return tok.apply_chat_template(documented_messages(messages, tools), tokenize=False, add_generation_prompt=True)

    def completion(self, tok, messages: list[dict], tools: list[dict] | None, target: str, eot_text: str) -> str:
        """The text the model is trained to write for canonical answer text `target` (end-of-turn excluded)."""
        if self.mode != "template":
            return target
        content, calls = split_answer(target)
        if not calls:
            return target
        tools = self.shown_tools(tools)
        kw = {"tools": tools} if tools else {}
        prompt = tok.apply_chat_template(_template_messages(messages), tokenize=False, add_generation_prompt=True, **kw)
        turn = {"role": "assistant", "content": content, "tool_calls": calls}
        full = tok.apply_chat_template(_template_messages(messages + [turn]), tokenize=False, **kw)
        if not full.startswith(prompt):
            raise ValueError("chat template: the tool-call turn does not extend the generation prompt")
        out = full[len(prompt):]
        return out[: out.rfind(eot_text)] if eot_text in out else out.rstrip()

    def canonical(self, generated: str) -> str:
        """A generated answer as canonical answer text."""
        if self.mode != "template":
            return generated
        p = parse_calls(generated)
        return answer_text(p["content"], p["tool_calls"]) if p["tool_calls"] else generated
