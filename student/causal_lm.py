"""Causal-LM student: any HF causal LM + LoRA, trained on the teacher's answers (assistant tokens only)
with TRL's SFTTrainer.

Contract (agreed with student/train.py and eval/):

    s, hist = CausalLMStudent.train_stage(cfg, train: list[Example], val: list[Example], ckpt_dir)  # the train stage
        # trains with TRL's SFTTrainer (student/lm_trainer.py: why, and how resume/early stopping map)
    figures = CausalLMStudent().fit(train: list[dict], val: list[dict], cfg: CausalLMStudentConfig,
                                    out_dir: Path, progress: bool = True) -> dict
        # standalone training: each example {"messages": [...], "response": str} (optional "id");
        # checkpoints under out_dir/checkpoints (resumed after a kill), the fitted model stays in `s`;
        # figures: steps, train_tokens, tokens_per_s, examples_per_s, train_loss, first_train_loss, val_loss,
        #          best_step, stopped_early, stop_reason, resumed_from_step, prompt_tokens_saved_per_request, wall_s
    s.save(path)                          # student.json {"kind": "causal_lm", ...} + adapter/ + merged/ (HF format)
    s = CausalLMStudent.load(path)        # loads merged/ (plain transformers, no peft needed)
    s.predict(batch: list[messages]) -> list[str]   # greedy, batched, stops at end-of-turn
    s.set_output_schema(schema, mode, targets)      # decode under the answers' JSON schema from now on
        # (student/constrained.py; the train stage calls it with causal_lm.constrained_decoding)
    kind = "causal_lm"

    Batched greedy generation is student/lm_generate.py; the few-shot prompted baseline (the untuned
    base model, for eval's "did fine-tuning beat prompting") is student/lm_baseline.py.

Default base model (cfg.base_model None): the bundled SmolLM2-135M-Instruct, converted once from
GGUF to safetensors (student/convert.py). Instruction baking (cfg.bake_system_prompt) drops the
teacher-only system prompt from the student's input at train AND predict time.
"""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

from core.base import stable_hash
from student.base import STUDENT_META, Example, Messages
from student.lm_data import ChatFormat, bake_messages, encode_all, prompt_tokens_saved
from student.lm_generate import generate


def load_base(base_model: str | None, cache_dir: str | None = None):
    """(tokenizer, float32 model) for a hub id / local dir / .gguf / None (= bundled SmolLM2)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from student.convert import loadable_base_model

    path = loadable_base_model(base_model, cache_dir)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    return tok, model, path


def _ensure_pad(tok, fmt: ChatFormat) -> None:
    # Padding positions are masked out (attention) and unlabelled, so reusing the end-of-turn
    # token as pad is harmless and avoids resizing the embedding matrix.
    if tok.pad_token_id is None:
        tok.pad_token = fmt.eot_text


class CausalLMStudent:
    kind = "causal_lm"

    def __init__(self, model=None, tokenizer=None, meta: dict | None = None):
        self.model, self.tok = model, tokenizer
        self.meta: dict[str, Any] = dict(meta or {})
        self.fmt = ChatFormat(self.meta["eot_id"], self.meta["eot_text"]) if "eot_id" in self.meta else None
        self._constraint: Any = None  # student.constrained.SchemaConstraint, built on first use

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, cfg, examples: list[Example]) -> "CausalLMStudent":
        """The base model (no LoRA yet: training adds it through TRL's peft_config) and its meta."""
        tok, model, path = load_base(cfg.base_model, cfg.cache_dir)
        fmt = ChatFormat.detect(tok)
        _ensure_pad(tok, fmt)
        sample = [e.messages for e in examples[:200]]
        meta = {
            "kind": cls.kind, "base_model": cfg.base_model, "base_path": path, "eot_id": fmt.eot_id, "eot_text": fmt.eot_text,
            "bake_system_prompt": cfg.bake_system_prompt, "max_seq_length": cfg.max_seq_length,
            "max_new_tokens": cfg.max_new_tokens, "generate_batch_size": cfg.generate_batch_size,
            "prompt_tokens_saved_per_request": round(prompt_tokens_saved(tok, sample), 2) if cfg.bake_system_prompt else 0.0,
        }
        from student.toolcall_lm import tool_format_for, uses_tools

        if uses_tools(examples):  # tools in the prompt, calls in the answer (student/toolcall_format.py)
            tf = tool_format_for(tok, fmt, examples, cfg.bake_system_prompt)
            meta["tool_format"] = tf.to_dict()
            if cfg.bake_system_prompt:  # a baked fixed tool list is saved too, not only the system prompt
                from student.toolcall_lm import prompt_tokens_saved_with_tools

                meta["prompt_tokens_saved_per_request"] = round(prompt_tokens_saved_with_tools(tf, tok, examples[:200]), 2)
        return cls(model, tok, meta)

    # ------------------------------------------------------------------ training (TRL's SFTTrainer)
    @classmethod
    def train_stage(cls, cfg, train: list[Example], val: list[Example], ckpt_dir: Path) -> tuple["CausalLMStudent", dict]:
        """What student/train.py calls for this kind: (trained student, history for metrics.json)."""
        from core.base import stable_hash

        s = cls.create(cfg, train + val)
        fingerprint = stable_hash([cfg.model_dump(mode="json"), cls.kind, [e.id for e in train], [e.id for e in val], [e.target for e in train]])
        return s, s._train(cfg, train, val, Path(ckpt_dir), fingerprint, progress=True)

    def _train(self, cfg, train: list[Example], val: list[Example], ckpt_dir: Path, fingerprint: str, progress: bool) -> dict:
        from student.lm_trainer import train_sft

        m = self.meta
        if self.tool_format is not None:
            from student.toolcall_lm import encode_rows

            tr, tr_stats = encode_rows(self.tool_format, self.tok, self.fmt, train, m["max_seq_length"], m["bake_system_prompt"])
            va, va_stats = encode_rows(self.tool_format, self.tok, self.fmt, val, m["max_seq_length"], m["bake_system_prompt"])
        else:
            tr, tr_stats = encode_all(self.tok, self.fmt, train, m["max_seq_length"], m["bake_system_prompt"])
            va, va_stats = encode_all(self.tok, self.fmt, val, m["max_seq_length"], m["bake_system_prompt"])
        self.model, hist = train_sft(self.model, self.tok, tr, va, cfg, ckpt_dir, fingerprint, progress)
        m["encode_stats"] = {"train": tr_stats, "val": va_stats}
        return {**hist, "encode_stats": m["encode_stats"]}

    def fit(self, train: list[dict], val: list[dict], cfg, out_dir: str | Path, progress: bool = True) -> dict:
        """Standalone training (checkpoints under out_dir/checkpoints); see the module docstring for figures."""
        import torch

        from student.config import resolve_kind

        cfg = resolve_kind(cfg, self.kind)
        t0 = time.time()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        tr, va = _examples(train), _examples(val)
        self.__dict__.update(CausalLMStudent.create(cfg, tr).__dict__)
        fingerprint = stable_hash([cfg.model_dump(mode="json"), self.kind, [e.id for e in tr], [e.id for e in va], [e.target for e in tr]])
        hist = self._train(cfg, tr, va, Path(out_dir) / "checkpoints", fingerprint, progress)
        tl = hist["train_losses"]
        tail = tl[-max(1, min(20, len(tl) // 5 or 1)):]
        best = next((v for v in hist["val"] if v["step"] == hist["best_step"]), None)
        return {
            "steps": hist["step"], "total_steps": hist["total_steps"], "best_step": hist["best_step"],
            "stopped_early": hist["stopped_early"], "stop_reason": hist["stop_reason"], "resumed_from_step": hist["resumed_from_step"],
            "train_tokens": hist["train_tokens"], "tokens_per_s": hist["tokens_per_s"],  # excl. validation
            "examples_per_s": hist["examples_per_s"],
            "train_loss": round(sum(tail) / len(tail), 5) if tail else None,
            "first_train_loss": tl[0] if tl else None,
            "val_loss": round(best["val_loss"], 5) if best else None,
            "val_history": hist["val"], "trainer": hist["wrapped_as"],
            "prompt_tokens_saved_per_request": self.meta.get("prompt_tokens_saved_per_request"),
            "encode_stats": hist["encode_stats"],
            "wall_s": round(time.time() - t0, 2),
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """adapter/ (peft, small) + merged/ (standalone HF model + tokenizer) + student.json."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        model = self.model
        if hasattr(model, "merge_and_unload"):
            model.save_pretrained(path / "adapter")
            model = copy.deepcopy(model).merge_and_unload()  # copy: self stays trainable/unmerged
        model.save_pretrained(path / "merged", safe_serialization=True)
        self.tok.save_pretrained(path / "merged")
        meta = {k: v for k, v in self.meta.items() if k != "encode_stats"}
        (path / STUDENT_META).write_text(json.dumps({**meta, "kind": self.kind}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "CausalLMStudent":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        meta = json.loads((path / STUDENT_META).read_text())
        tok = AutoTokenizer.from_pretrained(path / "merged")
        model = AutoModelForCausalLM.from_pretrained(path / "merged", dtype="float32").eval()
        s = cls(model, tok, meta)
        _ensure_pad(tok, s.fmt)
        return s

    # ------------------------------------------------------------------ constrained decoding
    def set_output_schema(self, schema: dict | None, mode: str = "auto", targets: list[str] | None = None) -> dict:
        """Decode under `schema` from now on (kept in student.json): mode on = required (a clear
        error when there is no schema or it cannot be used), auto = when there is a usable one,
        off = never. `targets` (the teacher's answers) set the JSON separators. Returns the note."""
        from core.base import DistillError
        from student.constrained import SchemaConstraint, json_separators

        m = self.meta
        m["output_schema"], m["constrained_decoding"], self._constraint = schema, "off", None
        if self.tool_format is not None:  # answers are text or <tool_call> blocks: grammars from each request's tools
            if mode == "off" or self.tool_format.mode != "json":
                m["constrained_note"] = "off" + (" (causal_lm.constrained_decoding=off)" if mode == "off" else " (the template's own tool format)")
                return {"constrained_decoding": "off", "note": m["constrained_note"]}
            m["constrained_decoding"] = "tools"
            m["constrained_note"] = "on (llguidance: calls name a declared tool, arguments follow its schema; text otherwise)"
            return {"constrained_decoding": "tools", "note": m["constrained_note"]}
        if mode == "off":
            m["constrained_note"] = "off (causal_lm.constrained_decoding=off)"
            return {"constrained_decoding": "off", "note": m["constrained_note"]}
        if schema is None:
            if mode == "on":
                raise DistillError("student.causal_lm.constrained_decoding=on, but the run has no output schema: set "
                                   "student.causal_lm.json_schema, or let the filter infer one (filter.format.infer_schema)")
            m["constrained_note"] = "off (no output schema)"
            return {"constrained_decoding": "off", "note": m["constrained_note"]}
        m["json_separators"] = list(json_separators(targets or []))
        try:
            self._constraint = SchemaConstraint(self.tok, schema, tuple(m["json_separators"]), self.fmt.eot_id, self._n_vocab())
        except DistillError as e:
            if mode == "on":
                raise
            m["constrained_note"] = f"off ({e})"
            return {"constrained_decoding": "off", "note": m["constrained_note"]}
        warn = "; ".join(self._constraint.warnings)
        m["constrained_decoding"], m["constrained_note"] = "on", "on (llguidance, JSON schema)" + (f"; not enforced: {warn}" if warn else "")
        return {"constrained_decoding": "on", "note": m["constrained_note"]}

    def constraint(self) -> Any:
        """The SchemaConstraint predict() decodes under, or None (off / no schema)."""
        m = self.meta
        if m.get("constrained_decoding") == "tools":
            if self._constraint is None:
                from student.constrained import ToolCallConstraint

                self._constraint = ToolCallConstraint(self.tok, self.fmt.eot_id, self._n_vocab())
            return self._constraint
        if m.get("constrained_decoding") != "on" or not m.get("output_schema"):
            return None
        if self._constraint is None:
            from student.constrained import SchemaConstraint

            self._constraint = SchemaConstraint(self.tok, m["output_schema"], tuple(m.get("json_separators") or (", ", ": ")),
                                                self.fmt.eot_id, self._n_vocab())
        return self._constraint

    def _n_vocab(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])  # the logits' width

    # ------------------------------------------------------------------ inference
    @property
    def tool_format(self) -> Any:
        """The ToolFormat (student/toolcall_format.py) when the student was trained with tools, else None."""
        from student.toolcall_format import ToolFormat

        d = self.meta.get("tool_format")
        return ToolFormat.from_dict(d) if d else None

    @property
    def accepts_tools(self) -> bool:
        return "tool_format" in self.meta

    def decode_answer(self, text: str) -> tuple[str | None, list[dict] | None]:
        """(content, calls) of one predict() answer (canonical answer text)."""
        from student.toolcall_format import split_answer

        return split_answer(text) if self.accepts_tools else (text, None)

    def _convs(self, batch: list[Messages], tools: Any = None) -> list[Any]:
        """What generate() renders: baked messages, or (tool students) the prompt text with tools."""
        bake = self.meta.get("bake_system_prompt", False)
        tf = self.tool_format
        if tf is None:
            return [bake_messages(msgs, bake) for msgs in batch]
        from student.toolcall_lm import tools_per_row

        return [tf.prompt(self.tok, bake_messages(msgs, bake), t) for msgs, t in zip(batch, tools_per_row(tools, len(batch)))]

    def _generate(self, convs: list[Any], scores: list[dict] | None = None, tools: Any = None) -> list[str]:
        m = self.meta
        c = self.constraint()
        grammars = None
        if c is not None and hasattr(c, "grammars"):  # per-row tool grammars: the request's tools, else the fixed list
            from student.toolcall_lm import tools_per_row

            fixed = self.tool_format.fixed
            grammars = c.grammars([t or fixed for t in tools_per_row(tools, len(convs))])
        out = generate(self.model, self.tok, self.fmt, convs, m.get("max_new_tokens", 128), m.get("max_seq_length", 256),
                       m.get("generate_batch_size", 16), scores=scores, constraint=c, grammars=grammars)
        tf = self.tool_format
        return [tf.canonical(t) for t in out] if tf is not None else out

    def predict(self, batch: list[Messages], tools: Any = None) -> list[str]:
        """Answers in order; `tools`: the tools each request declares (one list for all, or one per row)."""
        return self._generate(self._convs(batch, tools), tools=tools)

    def predict_scored(self, batch: list[Messages], score: str | None = None, tools: Any = None) -> list[tuple[str, float]]:
        """predict()'s answers, each with a confidence in [0, 1] from its answer tokens' log-probs
        (end-of-turn included: the decision to stop is part of the answer). `score`: "mean"
        (default) or "min" token log-prob, or "sum" (the sequence log-prob); with a calibration
        fitted by calibrate() it is Platt-scaled, else exp(score) (a geometric-mean probability
        for "mean"). Mean is the default: it ranked correctness better than min on the tiny test
        model (see the report of issue #18) and does not punish long answers the way sum does."""
        from student.calibration import platt

        m = self.meta
        cal = m.get("calibration")
        key = score or (cal or {}).get("score", "mean")
        scores: list[dict] = []
        texts = self._generate(self._convs(batch, tools), scores, tools)
        raw = [sc[key] for sc in scores]
        conf = platt(raw, cal) if cal and cal.get("score") == key else [math.exp(min(0.0, r)) for r in raw]
        return [(t, float(c)) for t, c in zip(texts, conf)]

    def calibrate(self, val: list[Example], score: str = "mean", max_examples: int = 512) -> dict[str, Any]:
        """Fit Platt scaling of the sequence score on the validation split (answers generated,
        correct = exactly the teacher's text) and keep it in meta (saved in student.json), so
        predict_scored returns calibrated confidences. Returns the fit with ECE before and after."""
        from student.calibration import ece, fit_platt, platt

        val = val[:max_examples]
        scores: list[dict] = []
        vt = [getattr(e, "tools", None) for e in val]
        texts = self._generate(self._convs([e.messages for e in val], vt), scores, vt)
        raw = [sc[score] for sc in scores]
        correct = [t == e.target for t, e in zip(texts, val)]
        fit = fit_platt(raw, correct)
        cal = {"method": "platt", "score": score, **fit, "fitted_on": "validation", "n": len(val),
               "val_accuracy": round(sum(correct) / len(val), 5) if val else None, "ece_binning": "equal_mass",
               "ece_before": ece([math.exp(min(0.0, r)) for r in raw], correct), "ece_after": ece(platt(raw, fit), correct)}
        self.meta["calibration"] = cal
        return cal


def _examples(rows: list[dict]) -> list[Example]:
    from student.toolcall_format import row_answer_text

    return [Example(str(r.get("id") or stable_hash(r["messages"])), r["messages"], row_answer_text(r), r.get("tools")) for r in rows]
