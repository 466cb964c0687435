"""Tool calls as answer fields, so the encoder classifier can be the student of a fixed tool list.

An answer that calls tools from a fixed list, each at most once, with scalar arguments, is one
flat object (core/answer_shape.py types its fields):

    {"tools": ["block_card", "transfer"], "arg.reason": "lost_or_stolen", "arg.amount": "50 euros"}
    {"tools": [], "text": "Sorry, I can only help with your account."}       (an answer in text)

`tools` is a label set; an argument is a span of the user's message or categorical, absent when
the call leaves it out; `text` is categorical (a handful of canned replies) or free, and a free
field sends kind auto to the causal LM, as for any answer. Arguments are keyed by name across
tools (every "amount" is one field, learned from every call that has one; each called tool takes
the fields its schema declares), so a field is not absent on every answer but its own tool's.
Several calls of one tool in one answer, two calls giving one argument name different values,
or a nested argument cannot be fields: the causal LM is chosen and the reason named.

- decide(cfg, examples): kind auto's decision for tool-calling examples (student/train.py calls it).
- for_kind(kind, ...): the examples as that kind trains on them, and the class to train.
- ToolFieldsClassifier: the classifier over those fields; decode_answer() turns its answer back
  into calls, and student.json records the fixed tool list ("tool_fields").
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from core.rundir import STUDENT_META
from student.toolcall_format import OPEN, fixed_tools, split_answer

TOOLS, TEXT = "tools", "text"


def uses_tools(examples: list) -> bool:
    """Examples that declare tools or answer with calls (canonical answer text always tags them)."""
    return any(getattr(e, "tools", None) or (OPEN in e.target and split_answer(e.target)[1]) for e in examples)


ARG = "arg."


def to_fields(target: str) -> tuple[dict | None, str | None]:
    """(the fields of one canonical answer text, None) or (None, why it cannot be fields)."""
    content, calls = split_answer(target)
    if not calls:
        return {TOOLS: [], TEXT: content or ""}, None
    names = [c["name"] for c in calls]
    if len(set(names)) < len(names):
        return None, f"a tool is called more than once in one answer ({sorted(n for n in set(names) if names.count(n) > 1)[0]})"
    out: dict[str, Any] = {TOOLS: sorted(names)}
    if content:
        out[TEXT] = content
    for c in sorted(calls, key=lambda c: c["name"]):
        for arg, v in (c.get("arguments") or {}).items():
            if isinstance(v, (dict, list)):
                return None, f"argument {c['name']}.{arg} is a {type(v).__name__}, not a scalar"
            if ARG + arg in out and out[ARG + arg] != v:
                return None, f"two calls in one answer give argument {arg!r} different values"
            out[ARG + arg] = v
    return out, None


def from_fields(obj: Any, tools: list[dict] | None = None) -> tuple[str | None, list[dict] | None]:
    """(content, calls) of a fields object (the classifier's answer); each called tool takes the
    argument fields its schema in `tools` declares (all of them when the tool is not described)."""
    if not isinstance(obj, dict):
        return None, None
    from core.toolcalls import tool_parameters

    params = tool_parameters(tools)
    names = obj.get(TOOLS) or []
    args = {k[len(ARG):]: v for k, v in obj.items() if k.startswith(ARG)}
    calls = [{"name": n, "arguments": {a: v for a, v in args.items() if n not in params or a in (params[n].get("properties") or {})}}
             for n in names]
    content = obj.get(TEXT)
    return (content if isinstance(content, str) and content else None), (calls or None)


def fields_text(target: str) -> str | None:
    f, _ = to_fields(target)
    return json.dumps(f, ensure_ascii=False) if f is not None else None


def decide(cfg: Any, examples: list) -> dict | None:
    """kind auto's decision for examples that call tools ({"kind", "decided_by", "reason", "types"}),
    or None when no example calls or declares tools (the ordinary decision applies)."""
    if not uses_tools(examples):
        return None
    from core.answer_shape import answer_shape, encoder_fit, last_user_text

    if fixed_tools([getattr(e, "tools", None) for e in examples]) is None:
        return {"kind": "causal_lm", "decided_by": "tools", "reason": "the requests declare different tool lists (not a fixed set)", "types": {}}
    fields = []
    for e in examples:
        f, why = to_fields(e.target)
        if f is None:
            return {"kind": "causal_lm", "decided_by": "tool_calls", "reason": why, "types": {}}
        fields.append(json.dumps(f, ensure_ascii=False))
    opts = cfg.classifier
    shape = answer_shape(fields, [last_user_text(e.messages) for e in examples], opts.max_labels, opts.min_examples_per_label)
    fit = encoder_fit(shape)
    ok = fit["encoder"] and shape["mode"] == "json"
    return {"kind": "classifier" if ok else "causal_lm", **fit,
            "reason": ("a fixed tool list; " if ok else "tool calls as fields: ") + fit["reason"]}


def for_kind(kind: str, train: list, val: list, examples: list, cls: Any) -> tuple[list, list, list, Any]:
    """(train, val, examples, class) as `kind` trains on them: a classifier of tool-calling
    examples learns the fields (ToolFieldsClassifier); everything else is unchanged."""
    if kind != "classifier" or not uses_tools(examples):
        return train, val, examples, cls
    from core.base import DistillError

    def conv(es: list) -> list:
        out = []
        for e in es:
            t = fields_text(e.target)
            if t is None:
                raise DistillError(f"record {e.id!r}: its tool calls cannot be classifier fields ({to_fields(e.target)[1]}); set student.kind: causal_lm")
            out.append(dataclasses.replace(e, target=t))
        return out

    tcls = tool_fields_class()
    tcls.fixed_tools = fixed_tools([getattr(e, "tools", None) for e in examples])
    tcls.text_with_calls = any(all(split_answer(e.target)) for e in examples)
    return conv(train), conv(val), conv(examples), tcls


_CLASS: list[type] = []


def tool_fields_class() -> type:
    """ToolFieldsClassifier: ClassifierStudent (whose module imports torch) over tool-call fields, built on first use."""
    if _CLASS:
        return _CLASS[0]
    from student.classifier import ClassifierStudent

    class ToolFieldsClassifier(ClassifierStudent):
        """The encoder classifier over tool-call fields (see the module doc). predict() answers with
        the fields (what the train stage's val scoring and fast path compare with the targets);
        decode_answer() turns an answer into (content, calls)."""

        accepts_tools = True
        fixed_tools: list[dict] | None = None  # the tool list it was trained on (student.json "tool_fields")
        text_with_calls = False  # the teacher ever wrote text beside calls (else a text field beside predicted calls is dropped)

        def predict(self, batch, tools=None):  # a fixed tool list: the request's is not read
            return super().predict(batch)

        def predict_scored(self, batch, tools=None):
            return super().predict_scored(batch)

        def decode_answer(self, text: str) -> tuple[str | None, list[dict] | None]:
            from core.answer_shape import parse_object

            content, calls = from_fields(parse_object(text or ""), self.fixed_tools)
            if calls and not self.text_with_calls:  # heads decide independently; the teacher never wrote both
                content = None
            if calls or content:
                return content, calls
            return ("", None) if parse_object(text or "") is not None else (text, None)  # fields saying neither: an empty answer

        def save(self, path):
            super().save(path)
            p = Path(path) / STUDENT_META
            meta = json.loads(p.read_text())
            meta["tool_fields"] = {"tools": self.fixed_tools, "text_with_calls": self.text_with_calls}
            p.write_text(json.dumps(meta, indent=2, ensure_ascii=False))

        @classmethod
        def load(cls, path, merge: bool = True):
            st = super().load(path, merge)
            tf = json.loads((Path(path) / STUDENT_META).read_text()).get("tool_fields") or {}
            st.fixed_tools, st.text_with_calls = tf.get("tools"), bool(tf.get("text_with_calls"))
            return st

        @classmethod
        def create(cls, cfg, examples):
            st = super().create(cfg, examples)
            st.fixed_tools, st.text_with_calls = cls.fixed_tools, cls.text_with_calls
            return st

    _CLASS.append(ToolFieldsClassifier)
    return ToolFieldsClassifier
