"""Constrained decoding: the causal LM generates under the answers' JSON schema, so an answer that
does not parse, lacks a required key or has an out-of-enum value cannot be produced (issue #16).

Library: llguidance (guidance-ai's Rust engine, also behind vLLM's and llama.cpp's structured
output): a token mask per step from the schema's grammar, no compile step, one small abi3 wheel
with no Python dependencies. The other candidates that install here were not wired: xgrammar
(pulls triton + apache-tvm-ffi) and lm-format-enforcer (pure Python, per-token prefix walks).
Figures with and without: bench/constrained_lm.py.

- The schema: causal_lm.json_schema (a file, e.g. the one filter.json_schema names), else the one
  the filter stage checked the kept answers against (configured or inferred; rd.output_schema), else none.
- Separators follow the teacher's own style (json.dumps' ", "/": " or compact), read off the
  training answers: the mask then leaves the fine-tuned model the exact text it learned.
- Keywords llguidance lacks are named in the student's note; uniqueItems, the one a label-set
  schema uses, is applied after decoding instead (duplicates dropped, first kept: unique_items).
  max_new_tokens can still end an answer before its JSON closes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.base import DistillError

def run_output_schema(cfg: Any, rd: Any) -> dict | None:
    """The schema the run's answers follow: causal_lm.json_schema, else the one the filter stage
    checked the kept answers against (filter.json_schema or its inferred schema: rd.output_schema)."""
    if getattr(cfg, "json_schema", None):
        p = Path(cfg.json_schema)
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DistillError(f"student.causal_lm.json_schema: cannot read {p}: {e}") from None
    p = rd.output_schema
    return json.loads(p.read_text(encoding="utf-8"))["schema"] if p.is_file() else None


def json_separators(texts: list[str]) -> tuple[str, str]:
    """(item, key) separators most JSON answers use: json.dumps' default (", ", ": ") or compact."""
    votes = {(", ", ": "): 0, (",", ":"): 0}
    for t in texts[:500]:
        try:
            obj = json.loads(t)
        except (ValueError, TypeError):
            continue
        for sep in votes:
            if json.dumps(obj, separators=sep, ensure_ascii=False) == t or json.dumps(obj, separators=sep) == t:
                votes[sep] += 1
    return max(votes, key=votes.get)


def grammar(schema: dict, separators: tuple[str, str]) -> tuple[str, list[str]]:
    """(the llguidance grammar for `schema`, warnings); DistillError naming the reason when it cannot
    be built. Lenient: keywords llguidance does not implement (uniqueItems, say) are left to the
    filter's validation and named in the warnings; everything else is enforced."""
    try:
        from llguidance import LLMatcher
    except ImportError as e:
        raise DistillError(f"constrained decoding needs llguidance (pip install llguidance; it is in requirements.lock): {e}") from None
    try:
        g = LLMatcher.grammar_from_json_schema(schema, overrides={"item_separator": separators[0], "key_separator": separators[1],
                                                                  "whitespace_flexible": False, "lenient": True})
    except ValueError as e:
        raise DistillError(f"output schema: {e}") from None
    is_error, msgs = LLMatcher.validate_grammar_with_warnings(g)
    if is_error:
        raise DistillError(f"output schema is not usable for constrained decoding: {msgs[0]}")
    return g, msgs


def unique_items(text: str, schema: dict, separators: tuple[str, str]) -> str:
    """`text` with duplicates removed from every array whose schema says uniqueItems (plain
    properties/items nesting); unchanged when there are none or it does not parse."""
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    fixed = _dedupe(obj, schema)
    return text if fixed == obj else json.dumps(fixed, separators=separators, ensure_ascii=False)


def _dedupe(v: Any, sch: Any) -> Any:
    if not isinstance(sch, dict):
        return v
    if isinstance(v, list):
        v = [_dedupe(x, sch.get("items")) for x in v]
        if sch.get("uniqueItems"):
            out: list = []
            for x in v:
                if x not in out:
                    out.append(x)
            v = out
        return v
    if isinstance(v, dict):
        props = sch.get("properties") or {}
        return {k: _dedupe(x, props.get(k, sch.get("additionalProperties"))) for k, x in v.items()}
    return v


class SchemaConstraint:
    """Builds, per generate() call, a transformers LogitsProcessor holding one matcher per row."""

    def __init__(self, tok, schema: dict, separators: tuple[str, str], eot_id: int, n_vocab: int) -> None:
        import llguidance.hf

        self.grammar, self.warnings = grammar(schema, separators)
        self.schema, self.separators = schema, separators
        # ~1 s (the vocabulary is scanned once): built once per loaded student
        self.lltok = llguidance.hf.from_tokenizer(tok, n_vocab=n_vocab, eos_token=eot_id)
        self.n_vocab, self.eot_id = n_vocab, eot_id
        self.errors = 0  # rows whose matcher failed (should stay 0: the mask only allows what it accepts)

    def finish(self, text: str) -> str:
        """What the mask cannot say, applied to a decoded answer (uniqueItems)."""
        return unique_items(text, self.schema, self.separators)

    def processor(self, rows: int, grammars: list[str | None] | None = None):
        """A LogitsProcessor for `rows` rows: every row under self.grammar, or row i under
        grammars[i] (None: that row decodes freely)."""
        import torch
        from llguidance import LLMatcher
        from transformers import LogitsProcessor

        outer = self
        gs = grammars if grammars is not None else [self.grammar] * rows
        matchers = [LLMatcher(self.lltok, g, log_level=0) if g else None for g in gs]
        failed: set[int] = set()
        shifts = torch.arange(32, dtype=torch.int64)

        class Mask(LogitsProcessor):
            started = False

            def __call__(self, input_ids, scores):
                import numpy as np

                for i, m in enumerate(matchers):
                    if m is None:
                        continue
                    last = int(input_ids[i, -1])
                    if self.started and last == outer.eot_id:
                        continue  # this row has ended: generate pads it from here on
                    if self.started and not m.is_stopped() and not m.is_error():
                        m.consume_token(last)
                    if m.is_error():  # cannot happen when every token went through the mask; decode freely then
                        outer.errors += i not in failed
                        failed.add(i)
                        continue
                    if m.is_stopped():  # the JSON is complete: only the end-of-turn token may follow
                        eot = scores[i, outer.eot_id].clone()
                        scores[i] = float("-inf")
                        scores[i, outer.eot_id] = eot
                        continue
                    words = torch.from_numpy(np.frombuffer(m.compute_bitmask(), dtype=np.uint32).astype(np.int64))
                    allowed = ((words[:, None] >> shifts) & 1).flatten()[: outer.n_vocab].bool().to(scores.device)
                    row = scores[i]
                    row[: outer.n_vocab].masked_fill_(~allowed, float("-inf"))
                    row[outer.n_vocab:] = float("-inf")
                self.started = True
                return scores

        return Mask()


def tool_call_grammar(tools: list[dict], allow_text: bool = True) -> str:
    """The llguidance grammar of an answer to a request declaring `tools`, in the documented
    format (student/toolcall_format.py): `<tool_call>` + a JSON list of calls, each naming a
    declared tool with arguments that follow its parameters schema, + `</tool_call>`; or (allow_text)
    plain text that does not start with "<". Lenient: keywords llguidance lacks are not enforced."""
    from llguidance import grammar_from

    from core.toolcalls import tool_parameters

    items = [{"type": "object", "properties": {"name": {"const": n}, "arguments": p if p.get("type") == "object" else {"type": "object"}},
              "required": ["name", "arguments"], "additionalProperties": False} for n, p in tool_parameters(tools).items()]
    schema = {"type": "array", "minItems": 1, "items": {"anyOf": items},
              "x-guidance": {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False, "lenient": True}}
    lark = 'start: "<tool_call>" calls "</tool_call>"' + (" | TEXT" if allow_text else "") + "\ncalls: %json " + json.dumps(schema) + "\n"
    if allow_text:
        lark += "TEXT: /[^<][\\s\\S]*/\n"
    return grammar_from("lark", lark)


class ToolCallConstraint(SchemaConstraint):
    """Per-row grammars from each request's tools (tool_call_grammar); a row without tools decodes freely."""

    def __init__(self, tok, eot_id: int, n_vocab: int) -> None:  # noqa: D107 - no schema: grammars come per row
        import llguidance.hf

        self.schema, self.separators, self.warnings, self.grammar = None, (", ", ": "), [], None
        self.lltok = llguidance.hf.from_tokenizer(tok, n_vocab=n_vocab, eos_token=eot_id)
        self.n_vocab, self.eot_id = n_vocab, eot_id
        self.errors = 0
        self._cache: dict[str, str] = {}

    def finish(self, text: str) -> str:
        return text

    def grammars(self, row_tools: list[list[dict] | None]) -> list[str | None]:
        from student.toolcall_format import tools_key

        out: list[str | None] = []
        for t in row_tools:
            if not t:
                out.append(None)
                continue
            k = tools_key(t)
            if k not in self._cache:
                self._cache[k] = tool_call_grammar(t)
            out.append(self._cache[k])
        return out
