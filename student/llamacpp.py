"""The llama.cpp serving engine for causal-LM students (llama-cpp-python, CPU).

LlamaCppStudent implements the Student protocol (student/base.py: predict, predict_scored,
count_tokens) over the student's GGUF export (student/gguf_export.py), so the OpenAI-shaped server
(student/serve.py) and the cascade (serving/cascade.py) serve it unchanged. Same answers as the HF
path by construction where it matters:
- the prompt is rendered and tokenised by the student's own HF tokenizer (student/lm_data.py's
  render_prompt, the baked system prompt dropped as at training) and handed to llama.cpp as ids;
- greedy decoding, stop at end-of-turn, max_new_tokens from student.json;
- decoding under the student's output JSON schema (student.json's output_schema, when
  constrained_decoding is on) through llama.cpp's JSON-schema grammar (GBNF); uniqueItems, which
  GBNF cannot say either, is applied after decoding as on the HF path (student/constrained.py);
- confidence = the mean log-prob of the answer tokens and the end-of-turn token, from the model's
  own logits (before the grammar), Platt-scaled with the calibration the train stage fitted on HF
  scores (student/causal_lm.py predict_scored).
One llama.cpp context, one sequence at a time: the server's micro-batcher calls predict from one
thread. Requests are decoded in turn; a shared prompt prefix is reused from the KV cache.

Decoding (student/llamacpp_decode.py): grammar-first greedy picks and prompt-lookup speculative
decoding (student/lookup_decoding.py), both giving plain greedy decoding's tokens; settings in
student.json "llamacpp" (LlamaCppSettings), weight type in "gguf_weight_type" (student/engine.py
chooses it on validation agreement). decoder="generate" is llama-cpp-python's own loop, kept as
the reference the tests and bench/serve_lm.py compare against.

Engine choice: student.json "serve_engine" (written by student/engine.py's select_and_record when
the export kept the HF answers on validation) or `distill serve --engine`.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
import time
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from core.base import DistillError, StrictModel
from core.rundir import STUDENT_META
from student.base import Messages

INSTALL_HINT = ("llama-cpp-python is not installed: `bash scripts/install.sh` builds it (a 5-15 minute compile on 2 cores), "
                "or `pip install --no-deps llama-cpp-python==0.3.36 diskcache==5.6.3`")


class LlamaCppSettings(StrictModel):
    """How the llama.cpp engine decodes (student.json "llamacpp"; absent = these defaults).

    Defaults measured with bench/serve_lm.py's 60-step NLU++ student, f16, 40 holdout requests in
    process, 1 thread, load average ~5 on the 2 shared cores (mean / p50 / p95 ms per request):
    generate (before) 1803 / 1651 / 3633; grammar-first, no drafts 1268 / 1230 / 2178; drafts of
    at most 3 924 / 884 / 1493, 6 851 / 759 / 1580, 10 976 / 854 / 1853 - every one of them the
    same 40 answers. A guess costs ~1/5 of a one-token pass, so longer drafts stop paying off."""

    decoder: Literal["lookup", "generate"] = Field("lookup", description="lookup = student/llamacpp_decode.py (grammar-first greedy, prompt-lookup drafts when max_draft > 0); generate = llama-cpp-python's Llama.generate loop (the pre-#14 path: the reference the new one is checked against).")
    max_draft: int = Field(6, ge=0, le=32, description="Most prompt-lookup guesses checked per forward pass (0 = no speculative decoding).")
    max_ngram: int = Field(3, ge=1, le=8, description="Longest n-gram matched to find a guess (longest first).")
    history: int = Field(64, ge=0, description="Served answers kept as a lookup corpus beside the schema exemplar.")
    flash_attn: bool = Field(False, description="llama.cpp flash attention (measured no faster for these short contexts).")


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def _gguf_for(model_dir: Path, meta: dict) -> Path:
    """The student's GGUF: the saved export, else a fresh one (in the student dir when writable,
    else a temporary directory: a registry copy may be read-only)."""
    from student.gguf_export import GGUF_FILE, export_gguf

    saved = model_dir / GGUF_FILE
    if saved.is_file():
        return saved
    try:
        return export_gguf(model_dir, saved, meta.get("gguf_weight_type", "f16"))
    except OSError:
        return export_gguf(model_dir, Path(tempfile.mkdtemp(prefix="distill-gguf-")) / "student.gguf", meta.get("gguf_weight_type", "f16"))


@cache
def _cpu_has_amx() -> bool:
    """Intel AMX (Sapphire Rapids and later). llama.cpp built with -march=native on such a CPU puts
    the weights in its AMX buffer type ("extra buffer types"): for f16 that works (and is what the
    served figures measured), for q4_0 llama_decode segfaulted on this project's CI machine
    (llama-cpp-python 0.3.36; tests/student/test_llamacpp.py's weight-type test), while the same
    q4_0 file decodes with extra buffer types off. So quantised types load without them there."""
    try:
        return " amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@contextmanager
def _model_params(use_extra_bufts: bool):
    """Llama() takes no use_extra_bufts: its __init__ starts from llama_model_default_params(),
    so that function is wrapped for the one load. Off, it also drops the CPU repack of quantised
    weights (a speed-up for q4_0 on AVX2), which only the non-default weight types use."""
    from llama_cpp import llama_cpp as C

    default = C.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = use_extra_bufts
        return p

    C.llama_model_default_params = params
    try:
        yield
    finally:
        C.llama_model_default_params = default


def schema_gbnf(schema: dict, separators: tuple[str, str]) -> str:
    """llama.cpp's GBNF for `schema` with the teacher's separators pinned: its converter allows an
    optional space around every token (`space ::= " "?`); the HF path's llguidance grammar allows
    only the separators the training answers use (student/constrained.py json_separators), so an
    answer can differ only where the two models differ, not by a free whitespace choice. Properties
    come in schema order in both grammars."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    g = json_schema_to_gbnf(json.dumps(schema))
    g = g.replace('"," space', json.dumps(separators[0])).replace('":" space', json.dumps(separators[1]))
    return re.sub(r"^space ::= .*$", 'space ::= ""', g, flags=re.M)


class LlamaCppStudent:
    kind = "causal_lm"
    engine = "llamacpp"

    def __init__(self, llm: Any, tokenizer: Any, meta: dict, gguf_path: Path, settings: LlamaCppSettings | None = None):
        from student.lm_data import ChatFormat

        self.llm, self.tok, self.meta, self.gguf_path = llm, tokenizer, meta, gguf_path
        self.settings = settings or LlamaCppSettings.model_validate(meta.get("llamacpp") or {})
        self.fmt = ChatFormat(meta["eot_id"], meta["eot_text"])
        self.separators = tuple(meta.get("json_separators") or (", ", ": "))
        self._gbnf = self._grammar_text()
        self._decoder = self._make_decoder() if self.settings.decoder == "lookup" else None
        # counters read by bench/serve_lm.py and the engine choice
        self.tokens_generated = self.forward_passes = self.drafted = self.accepted = 0
        self.decode_s = 0.0
        self._governor: Any = None  # set by load(adaptive_threads=True)

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, gguf_path: str | Path | None = None,
             settings: LlamaCppSettings | None = None, weight_type: str | None = None,
             adaptive_threads: bool = False) -> "LlamaCppStudent":
        """`weight_type`: of the GGUF at `gguf_path` (default: student.json's "gguf_weight_type");
        `adaptive_threads`: re-pick the thread count between requests (student/threads.py
        ThreadGovernor: a server whose thread count was chosen automatically)."""
        try:
            from llama_cpp import Llama
        except ImportError:
            raise DistillError(INSTALL_HINT) from None
        from transformers import AutoTokenizer

        path = Path(path)
        meta = json.loads((path / STUDENT_META).read_text())
        if meta.get("kind") != "causal_lm":
            raise DistillError(f"{path}: the llama.cpp engine serves causal-LM students (this one is {meta.get('kind')!r})")
        if meta.get("tool_format"):
            raise DistillError(f"{path}: a student trained with tools is served by the hf engine (tool-call rendering is HF-only)")
        try:
            settings = settings or LlamaCppSettings.model_validate(meta.get("llamacpp") or {})
        except ValueError as e:
            raise DistillError(f"{path / STUDENT_META}: \"llamacpp\" settings: {e}") from None
        gguf = Path(gguf_path) if gguf_path else _gguf_for(path, meta)
        if threads is None:
            from student.threads import auto_threads

            threads = auto_threads()
        n_ctx = int(meta.get("max_seq_length", 256)) + int(meta.get("max_new_tokens", 128)) + settings.max_draft + 8
        weight_type = weight_type or meta.get("gguf_weight_type", "f16")
        with _model_params(use_extra_bufts=weight_type in ("f16", "f32") or not _cpu_has_amx()):
            llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_batch=min(512, n_ctx), n_threads=threads, n_threads_batch=threads,
                        logits_all=False, flash_attn=settings.flash_attn, verbose=False)
        st = cls(llm, AutoTokenizer.from_pretrained(path / "merged"), meta, gguf, settings)
        if adaptive_threads:
            from student.threads import ThreadGovernor

            st._governor = ThreadGovernor(threads)
        return st

    def save(self, path: str | Path) -> None:
        raise DistillError("a llama.cpp-served student is saved from its HF form (student/causal_lm.py), not from the engine")

    # ------------------------------------------------------------------ decoding
    def _grammar_text(self) -> str | None:
        m = self.meta
        if m.get("constrained_decoding") != "on" or not m.get("output_schema"):
            return None
        from llama_cpp import LlamaGrammar

        try:
            g = schema_gbnf(m["output_schema"], self.separators)
            LlamaGrammar.from_string(g, verbose=False)  # parsed once here: a bad schema fails at load, not per request
            return g
        except Exception as e:  # the converter raises plain exceptions on keywords it lacks
            raise DistillError(f"output schema is not usable as a llama.cpp grammar: {e}") from None

    def _make_decoder(self) -> Any:
        from student.llamacpp_decode import GreedyDecoder
        from student.lookup_decoding import NgramDrafter, schema_exemplar

        st, drafter = self.settings, None
        if st.max_draft > 0:
            corpus = []
            if self.meta.get("output_schema"):
                corpus.append(self.tok(schema_exemplar(self.meta["output_schema"], self.separators), add_special_tokens=False)["input_ids"])
            drafter = NgramDrafter(corpus, st.max_ngram, st.history)
        return GreedyDecoder(self.llm, self._gbnf, self.fmt.eot_id, drafter, st.max_draft)

    def _prompt_ids(self, messages: Messages) -> list[int]:
        from student.lm_data import bake_messages, render_prompt

        conv = bake_messages(messages, self.meta.get("bake_system_prompt", False))
        ids = self.tok(render_prompt(self.tok, conv), add_special_tokens=False)["input_ids"]
        return ids[-int(self.meta.get("max_seq_length", 256)):]

    def _generate(self, prompt: list[int]) -> tuple[list[int], list[float]]:
        """llama-cpp-python's own loop (settings.decoder == "generate"): the pre-#14 path."""
        import numpy as np
        from llama_cpp import LlamaGrammar
        from llama_cpp import llama_cpp as C

        llm, eot, n_vocab = self.llm, self.fmt.eot_id, self.llm.n_vocab()
        grammar = LlamaGrammar.from_string(self._gbnf, verbose=False) if self._gbnf else None
        new: list[int] = []
        lps: list[float] = []
        for tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, grammar=grammar):
            # the logits this token was chosen from (the model's own, before the grammar)
            row = np.ctypeslib.as_array(C.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            mx = float(row.max())
            lps.append(float(row[tok]) - mx - math.log(float(np.exp(row - mx).sum())))
            if tok == eot or C.llama_vocab_is_eog(llm._model.vocab, tok):
                break
            new.append(tok)
            if len(new) >= int(self.meta.get("max_new_tokens", 128)):
                break
        self.forward_passes += len(lps)
        return new, lps

    def decode_ids(self, prompt: list[int]) -> tuple[list[int], list[float]]:
        """(answer token ids, their log-probs) for prompt ids, by the configured decoder."""
        t0 = time.perf_counter()
        if self._governor is not None and (n := self._governor.poll()):
            from llama_cpp import llama_cpp as C

            C.llama_set_n_threads(self.llm.ctx, n, n)
        if self._decoder is None:
            new, lps = self._generate(prompt)
        else:
            d = self._decoder.run(prompt, int(self.meta.get("max_new_tokens", 128)))
            new, lps = d.tokens, d.logprobs
            self.forward_passes += d.forward_passes
            self.drafted += d.drafted
            self.accepted += d.accepted
        self.decode_s += time.perf_counter() - t0
        self.tokens_generated += len(lps)
        return new, lps

    def _one(self, messages: Messages) -> tuple[str, dict]:
        new, lps = self.decode_ids(self._prompt_ids(messages))
        text = self.tok.decode(new, skip_special_tokens=True)
        if self._gbnf is not None:
            from student.constrained import unique_items

            text = unique_items(text, self.meta["output_schema"], self.separators)
        score = {"mean": sum(lps) / len(lps), "min": min(lps), "sum": sum(lps), "tokens": len(lps)} if lps else \
            {"mean": 0.0, "min": 0.0, "sum": 0.0, "tokens": 0}
        return text, score

    def predict(self, batch: list[Messages], tools: Any = None) -> list[str]:
        return [self._one(m)[0] for m in batch]

    def predict_scored(self, batch: list[Messages], score: str | None = None, tools: Any = None) -> list[tuple[str, float]]:
        """As CausalLMStudent.predict_scored: mean (default) / min / sum answer-token log-prob,
        Platt-scaled with the student's calibration when it was fitted on that score."""
        from student.calibration import platt

        cal = self.meta.get("calibration")
        key = score or (cal or {}).get("score", "mean")
        pairs = [self._one(m) for m in batch]
        raw = [s[key] for _, s in pairs]
        conf = platt(raw, cal) if cal and cal.get("score") == key else [math.exp(min(0.0, r)) for r in raw]
        return [(t, float(c)) for (t, _), c in zip(pairs, conf)]

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(x) for x in self.tok(texts, add_special_tokens=False)["input_ids"]]
