"""Saving and loading the classifier student (student.json + adapter + heads [+ kNN memory]).
A save without a "layout" in student.json (one or more categorical fields: every save before
label sets and spans) loads as before."""
from __future__ import annotations

import json
from pathlib import Path

from core.rundir import STUDENT_META
from student.classifier_format import OutputFormat
from student.encoder import head_key, load_encoder, make_heads
from student.fields import Layout


class PersistMixin:
    """save() and load() of ClassifierStudent."""

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(path / "adapter")
        self.tokenizer.save_pretrained(path / "tokenizer")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}, str(path / "heads.safetensors"))
        meta = {"kind": self.kind, "format": self.fmt.to_dict(), "vocab": self.vocab, "pooling": self.pooling,
                "max_length": self.max_length, "base_model": self.base_ref, "hidden_size": self.encoder.config.hidden_size}
        if self.knn and self.memory is not None:
            mem, labels = self.memory
            save_file({"embeddings": mem.detach().cpu().contiguous(), **{f"labels.{head_key(f)}": labels[f].cpu().contiguous() for f in self.vocab}},
                      str(path / "knn.safetensors"))
            meta["knn"] = self.knn
        if self.lexical is not None:
            self.lexical.save(path)
            meta["lexical"] = {"weight": self.lexical_weight}
        if self.calibration:
            meta["calibration"] = self.calibration
        meta.update(self.structured_meta())  # set / span fields: the layout, thresholds, biases
        # student.json last: its presence marks a complete save.
        (path / STUDENT_META).write_text(json.dumps(meta, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path, merge: bool = True):  # -> ClassifierStudent
        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import AutoTokenizer

        from student.models import resolve_base_model

        path = Path(path)
        meta = json.loads((path / STUDENT_META).read_text())
        ref = meta["base_model"]
        base_path = resolve_base_model(None, "classifier").name_or_path if "bundled" in ref else ref["name_or_path"]
        encoder, _ = load_encoder(base_path)
        encoder = PeftModel.from_pretrained(encoder, str(path / "adapter"))
        if merge:  # inference only: fold LoRA into the weights, no per-call adapter overhead
            encoder = encoder.merge_and_unload()
        encoder.eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path / "tokenizer"))
        heads = make_heads(meta["hidden_size"], meta["vocab"])
        layout = Layout.from_dict(meta["layout"]) if meta.get("layout") else None  # absent in single-categorical saves
        st = cls(encoder, tokenizer, heads, OutputFormat(**meta["format"]), meta["vocab"], pooling=meta["pooling"],
                 max_length=meta["max_length"], base_ref=ref, layout=layout)
        st.span_tags = meta.get("span_tags", "per_name")  # absent in students saved before the factored head
        st.add_structured_heads(heads, meta["hidden_size"])
        heads.load_state_dict(load_file(str(path / "heads.safetensors")))
        heads.eval()
        st.load_structured_meta(meta)
        if meta.get("knn"):
            mem = load_file(str(path / "knn.safetensors"))
            st.knn, st.memory = meta["knn"], (mem["embeddings"], {f: mem[f"labels.{head_key(f)}"] for f in meta["vocab"]})
        if meta.get("lexical"):
            from student.lexical import LexicalModel

            st.lexical, st.lexical_weight = LexicalModel.load(path), meta["lexical"]["weight"]
        st.calibration = meta.get("calibration")  # absent in older saves: T = 1
        return st
