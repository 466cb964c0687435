"""Turning {"messages", "response"} examples into causal-LM training rows, and batching them.

- Loss only on the assistant turn: the prompt is rendered with the tokenizer's chat template
  (add_generation_prompt=True) and its tokens get label -100; the response tokens and the
  template's end-of-turn token are labelled, so the student learns to stop.
- Prompt and completion are tokenized separately and concatenated: predict() tokenizes exactly
  the same prompt string, so training and inference see identical prompt tokens.
- Batching is TRL's (student/lm_trainer.py): padding-free, so no bucketing by length is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100


def bake_messages(messages: list[dict], bake: bool) -> list[dict]:
    """Instruction baking: drop the teacher-only system prompt from the student's input.

    The fine-tuned student has learned the task, so the instructions are paid for once at training
    time instead of on every request. An empty system turn replaces it so templates that inject a
    default system prompt when none is given (SmolLM2 does) do not add one back.
    """
    if not bake:
        return list(messages)
    rest = [m for m in messages if m.get("role") != "system"]
    if len(rest) == len(messages):
        return rest
    return [{"role": "system", "content": ""}] + rest


def render_prompt(tok, messages: list[dict]) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class ChatFormat:
    """What the template appends after an assistant message: its end-of-turn token."""

    eot_id: int
    eot_text: str

    @classmethod
    def detect(cls, tok) -> "ChatFormat":
        probe = [{"role": "user", "content": "hi"}]
        sentinel = "XYZZY"
        prompt = render_prompt(tok, probe)
        full = tok.apply_chat_template(probe + [{"role": "assistant", "content": sentinel}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("chat template: the assistant turn does not extend the generation prompt")
        suffix = full[len(prompt):].split(sentinel, 1)[1]
        special = set(tok.all_special_ids)
        for tid in tok(suffix, add_special_tokens=False)["input_ids"]:
            if tid in special:
                return cls(tid, tok.convert_ids_to_tokens(tid))
        # Template without an explicit end-of-turn marker: fall back to EOS.
        if tok.eos_token_id is None:
            raise ValueError("tokenizer has neither an end-of-turn token in its chat template nor an EOS token")
        return cls(tok.eos_token_id, tok.eos_token)


def encode_example(tok, fmt: ChatFormat, messages: list[dict], response: str, max_length: int) -> dict:
    """input_ids/labels for one example, at most `max_length` tokens (see `fit_ids`)."""
    prompt_ids = tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"]
    return fit_ids(prompt_ids, tok(response, add_special_tokens=False)["input_ids"] + [fmt.eot_id], max_length)


def fit_ids(prompt_ids: list[int], comp_ids: list[int], max_length: int) -> dict:
    """Prompt + completion in at most `max_length` tokens, loss on the completion only. The prompt
    is left-truncated to fit (its end - the latest turns and the generation prompt - matters
    most). A response that cannot fit on its own is cut (flagged "cut"): rare, and a cut answer
    still teaches its start."""
    cut = len(comp_ids) > max_length - 8
    if cut:
        comp_ids = comp_ids[: max_length - 8]
    keep = max_length - len(comp_ids)
    truncated = len(prompt_ids) > keep
    prompt_ids = prompt_ids[-keep:] if truncated else prompt_ids
    return {"input_ids": prompt_ids + comp_ids, "labels": [IGNORE] * len(prompt_ids) + comp_ids, "truncated": truncated, "cut": cut}


def encode_all(tok, fmt: ChatFormat, examples: list, max_length: int, bake: bool) -> tuple[list[dict], dict]:
    """Encode Example objects (.messages/.target) or dicts ("messages"/"response")."""
    rows = []
    for ex in examples:
        msgs, resp = (ex.messages, ex.target) if hasattr(ex, "target") else (ex["messages"], ex["response"])
        rows.append(encode_example(tok, fmt, bake_messages(msgs, bake), resp, max_length))
    return rows, {"examples": len(rows), "prompt_truncated": sum(r["truncated"] for r in rows),
                  "response_cut": sum(r["cut"] for r in rows)}


def prompt_tokens_saved(tok, conversations: list[list[dict]]) -> float:
    """Mean prompt tokens per request removed by instruction baking."""
    if not conversations:
        return 0.0
    total = 0
    for msgs in conversations:
        full = len(tok(render_prompt(tok, msgs), add_special_tokens=False)["input_ids"])
        baked = len(tok(render_prompt(tok, bake_messages(msgs, True)), add_special_tokens=False)["input_ids"])
        total += full - baked
    return total / len(conversations)
