"""The causal LM with tools: prompts that carry the request's tools, answers that carry calls.

Used by student/causal_lm.py when its training examples declare tools (Example.tools) or answer
with calls: the student then keeps a ToolFormat (student/toolcall_format.py) in student.json
("tool_format") and renders every prompt through it, at train and predict time alike, so the
prompt tokens it learned on are the ones it is served. Its answers are canonical answer text.
"""
from __future__ import annotations

from student.lm_data import ChatFormat, bake_messages, fit_ids
from student.toolcall_format import OPEN, ToolFormat, fixed_tools, split_answer


def uses_tools(examples: list) -> bool:
    """Examples that declare tools or answer with calls (canonical answer text always tags them)."""
    return any(getattr(e, "tools", None) or (OPEN in e.target and split_answer(e.target)[1]) for e in examples)


def tool_format_for(tok, fmt: ChatFormat, examples: list, bake: bool) -> ToolFormat:
    return ToolFormat.detect(tok, fmt.eot_text, fixed_tools([getattr(e, "tools", None) for e in examples]), bake)


def prompt_text(tf: ToolFormat, tok, messages: list[dict], tools: list[dict] | None, bake: bool) -> str:
    return tf.prompt(tok, bake_messages(messages, bake), tools)


def encode_rows(tf: ToolFormat, tok, fmt: ChatFormat, examples: list, max_length: int, bake: bool) -> tuple[list[dict], dict]:
    """input_ids/labels per example, as lm_data.encode_all (same truncation rules), prompts through `tf`."""
    rows = []
    for ex in examples:
        msgs = bake_messages(ex.messages, bake)
        prompt_ids = tok(tf.prompt(tok, msgs, ex.tools), add_special_tokens=False)["input_ids"]
        comp = tf.completion(tok, msgs, ex.tools, ex.target, fmt.eot_text)
        rows.append(fit_ids(prompt_ids, tok(comp, add_special_tokens=False)["input_ids"] + [fmt.eot_id], max_length))
    return rows, {"examples": len(rows), "prompt_truncated": sum(r["truncated"] for r in rows),
                  "response_cut": sum(r["cut"] for r in rows)}


def prompt_tokens_saved_with_tools(tf: ToolFormat, tok, examples: list) -> float:
    """Mean prompt tokens per request that baking removes: the system prompt and a fixed tool list."""
    if not examples:
        return 0.0
    plain = ToolFormat(tf.mode)  # nothing baked: the tools as the teacher got them
    n = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    return sum(n(plain.prompt(tok, e.messages, e.tools)) - n(tf.prompt(tok, bake_messages(e.messages, True), e.tools))
               for e in examples) / len(examples)


def tools_per_row(tools: list | None, n: int) -> list[list[dict] | None]:
    """predict()'s `tools` argument (None, or one tool list / None per conversation) as n entries."""
    if tools is None:
        return [None] * n
    if len(tools) != n:
        raise ValueError(f"tools: {len(tools)} entries for {n} conversations (give one tool list, or None, per conversation)")
    return list(tools)
