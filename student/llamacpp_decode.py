"""Greedy decoding on a llama.cpp context, grammar-constrained, with optional prompt-lookup drafts.

Why not `Llama.generate`: its sampler chain runs the GBNF grammar over all ~49k vocabulary entries
at every step, before the greedy pick - most of a step's time for a 135M model. The masked argmax
equals the plain argmax whenever the grammar accepts the plain argmax, so here the grammar checks
that one token first and masks the whole vocabulary only when it is rejected (llama.cpp's own
common/sampling.cpp does the same). Same token at every step as grammar-then-greedy.

Speculative decoding without a draft model (student/lookup_decoding.py): the guessed tokens are
fed with the chosen one in a single batch, every position's logits kept, and a guess is kept only
when it equals what the grammar-constrained greedy pick from the previous position's logits is;
the first miss ends the round (its pick is the next token, its K/V and those after it are dropped
from the cache). So the answer is greedy decoding's token for token; a good guess saves a pass.

The K/V cache keeps the last request's tokens: the next one re-feeds only what follows the common
prefix (the chat template's head with a baked system prompt; the whole system prompt otherwise).
One sequence, one caller at a time (the server's micro-batcher calls predict from one thread).
"""
from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

_NEG_INF = -math.inf
_TIERS = (64, 1024)  # top-k candidate sets the grammar checks before the whole vocabulary


@dataclass
class Decoded:
    tokens: list[int]  # the answer, end-of-turn excluded
    logprobs: list[float]  # per chosen token (end-of-turn included when it was chosen), from the unconstrained logits
    forward_passes: int  # llama_decode calls after the prompt
    drafted: int  # guesses fed
    accepted: int  # guesses kept


class GreedyDecoder:
    """`llm`: a llama_cpp.Llama used only through this decoder (its own generate() bookkeeping is
    bypassed); `gbnf`: the grammar text or None; `drafter`: an NgramDrafter or None; `max_draft`:
    the most guesses fed per pass."""

    def __init__(self, llm: Any, gbnf: str | None, eot_id: int, drafter: Any = None, max_draft: int = 0):
        from llama_cpp import _internals
        from llama_cpp import llama_cpp as C

        self.C, self.llm, self.eot_id = C, llm, eot_id
        self.ctx, self.vocab, self.n_vocab = llm.ctx, llm._model.vocab, llm.n_vocab()
        self.mem = C.llama_get_memory(self.ctx)
        self.n_ctx, self.n_batch = llm.n_ctx(), llm.n_batch
        self.drafter, self.max_draft = drafter, max_draft if drafter is not None else 0
        # compiled once; each answer decodes with a clone (the sampler holds the grammar's parse state)
        self._grammar0 = C.llama_sampler_init_grammar(self.vocab, gbnf.encode(), b"root") if gbnf else None
        if gbnf and not self._grammar0:
            raise ValueError("llama.cpp could not parse the grammar")
        self._batch = _internals.LlamaBatch(n_tokens=max(self.n_batch, max_draft + 1), embd=0, n_seq_max=1, verbose=False)
        self._full = _internals.LlamaTokenDataArray(n_vocab=self.n_vocab)
        self._kv: list[int] = []  # tokens whose K/V are in the cache, positions 0.., sequence 0

    def close(self) -> None:
        if self._grammar0:
            self.C.llama_sampler_free(self._grammar0)
            self._grammar0 = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the library may be gone already
            pass

    # ------------------------------------------------------------------ model calls
    def _truncate(self, n: int) -> None:
        if n < len(self._kv):
            self.C.llama_memory_seq_rm(self.mem, 0, n, -1)
            del self._kv[n:]

    def _decode(self, tokens: list[int], all_logits: bool) -> np.ndarray:
        """Feed `tokens` after the cached ones; the logits rows asked for (all, or the last), 2-D."""
        rows = []
        for s in range(0, len(tokens), self.n_batch):
            chunk = tokens[s:s + self.n_batch]
            b = self._batch.batch
            b.n_tokens = len(chunk)
            base = len(self._kv)
            for i, t in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, base + i, 1, all_logits
                b.seq_id[i][0] = 0
            b.logits[len(chunk) - 1] = True
            rc = self.C.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} ({len(chunk)} tokens at position {base}, context {self.n_ctx})")
            self._kv.extend(chunk)
            n_out = len(chunk) if all_logits else 1
            rows.append(np.ctypeslib.as_array(self.C.llama_get_logits(self.ctx), shape=(n_out, self.n_vocab)).copy())
        return np.concatenate(rows) if all_logits else rows[-1]

    def _pick(self, row: np.ndarray, grammar: Any) -> int:
        """Grammar-constrained greedy token from one logits row (module docstring: grammar-first check)."""
        t = int(row.argmax())
        if grammar is None:
            return t
        if self._allowed(grammar, np.array([t]), row):
            return t
        # The highest-logit admitted token among the top k is the masked argmax (every token outside
        # them has a lower logit); the grammar's cost grows with the candidates it checks (a full
        # vocabulary pass measured ~30 ms), and the admitted token is mostly near the top.
        for k in _TIERS:
            top = np.argpartition(row, -k)[-k:]
            top = top[np.lexsort((top, -row[top]))]  # by logit, ties by id: the order greedy's argmax breaks them
            ok = self._allowed(grammar, top, row)
            if ok.any():
                return int(top[int(np.argmax(ok))])
        ok = self._allowed(grammar, None, row)
        if not ok.any():
            raise RuntimeError("the grammar admits no token here")
        return int(np.flatnonzero(ok)[int(np.argmax(row[ok]))])

    def _allowed(self, grammar: Any, ids: np.ndarray | None, row: np.ndarray) -> np.ndarray:
        """Which of `ids` (None: the whole vocabulary, in id order) the grammar admits next."""
        arr = self._full
        n = self.n_vocab if ids is None else len(ids)
        data = arr.candidates_data
        data.id[:n] = np.arange(n, dtype=np.intc) if ids is None else ids
        data.logit[:n] = row if ids is None else row[ids]
        arr.candidates.size, arr.candidates.selected, arr.candidates.sorted = n, -1, False
        self.C.llama_sampler_apply(grammar, ctypes.byref(arr.candidates))
        return data.logit[:n] != _NEG_INF

    @staticmethod
    def _logprob(row: np.ndarray, t: int) -> float:
        mx = float(row.max())
        return float(row[t]) - mx - math.log(float(np.exp(row - mx).sum()))

    # ------------------------------------------------------------------ one answer
    def run(self, prompt: list[int], max_new: int) -> Decoded:
        C = self.C
        p = 0
        for a, b in zip(self._kv, prompt):
            if a != b:
                break
            p += 1
        self._truncate(min(p, len(prompt) - 1))  # the last prompt token is re-fed: its logits are needed
        rows = [self._decode(prompt[len(self._kv):], all_logits=False)[-1]]
        grammar = C.llama_sampler_clone(self._grammar0) if self._grammar0 else None
        out: list[int] = []
        lps: list[float] = []
        pending: list[int] = []  # guesses in the cache whose check is the next row
        passes = drafted = accepted = 0
        try:
            while rows:
                row = rows.pop(0)
                t = self._pick(row, grammar)
                lps.append(self._logprob(row, t))
                if t == self.eot_id or C.llama_vocab_is_eog(self.vocab, t):
                    break
                if grammar is not None:
                    C.llama_sampler_accept(grammar, t)
                out.append(t)
                if len(out) >= max_new:
                    break
                if pending:
                    guess = pending.pop(0)
                    if guess == t:  # already in the cache, and the next row checks what follows it
                        accepted += 1
                        continue
                    self._truncate(len(self._kv) - 1 - len(pending))  # drop the missed guess and the rest
                    pending, rows = [], []
                room = min(self.max_draft, max_new - len(out), self.n_ctx - len(self._kv) - 1)
                guesses = self.drafter.draft(prompt + out, room) if room > 0 else []
                rows = list(self._decode([t] + guesses, all_logits=bool(guesses)))
                pending, passes, drafted = list(guesses), passes + 1, drafted + len(guesses)
        finally:
            if grammar is not None:
                C.llama_sampler_free(grammar)
        if self.drafter is not None:
            self.drafter.remember(out)
        return Decoded(out, lps, passes, drafted, accepted)
