"""Batched greedy generation for causal-LM students and the prompted baseline, with the answer
tokens' log-probs (the cascade's confidence) and an optional schema constraint per step."""
from __future__ import annotations

from typing import Any

from student.base import Messages
from student.lm_data import ChatFormat, render_prompt


def generate(model, tok, fmt: ChatFormat, convs: list[Messages | str], max_new_tokens: int, max_prompt: int, batch_size: int,
             scores: list[dict] | None = None, constraint: Any = None, grammars: list | None = None) -> list[str]:
    """Greedy, batched (left padding; conversations grouped by length), stops at end-of-turn.
    `scores`, when given, is filled in input order with {"mean", "min", "sum", "tokens"} of the
    generated answer tokens' log-probs (up to and including the end-of-turn token), from the
    model's own distribution (before any constraint). `constraint`: a SchemaConstraint
    (student/constrained.py) whose token mask every step goes through."""
    import torch
    from transformers import LogitsProcessorList

    ids = [tok(c if isinstance(c, str) else render_prompt(tok, c), add_special_tokens=False)["input_ids"][-max_prompt:] for c in convs]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(ids)
    row_scores: list[dict] = [{}] * len(ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else fmt.eot_id
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            n = max(len(ids[i]) for i in idx)
            x = torch.full((len(idx), n), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), n), dtype=torch.long)
            for j, i in enumerate(idx):
                x[j, n - len(ids[i]):] = torch.tensor(ids[i])
                mask[j, n - len(ids[i]):] = 1
            gen = model.generate(input_ids=x.to(model.device), attention_mask=mask.to(model.device), do_sample=False, max_new_tokens=max_new_tokens,
                                 eos_token_id=fmt.eot_id, pad_token_id=pad, output_logits=scores is not None,
                                 return_dict_in_generate=scores is not None,
                                 logits_processor=LogitsProcessorList([constraint.processor(len(idx), [grammars[i] for i in idx] if grammars else None)]
                                                                      if constraint else []))
            seqs = gen.sequences if scores is not None else gen
            if scores is not None:  # raw logits per step: the model's own distribution, before any processor
                steps = seqs[:, n:]
                lp = torch.stack([torch.log_softmax(lg.float(), -1).gather(1, steps[:, t:t + 1])[:, 0]
                                  for t, lg in enumerate(gen.logits)], 1).cpu()
            for j, i in enumerate(idx):
                new = seqs[j, n:].tolist()
                if fmt.eot_id in new:
                    new = new[:new.index(fmt.eot_id)]
                out[i] = tok.decode(new, skip_special_tokens=True)
                if constraint is not None:
                    out[i] = constraint.finish(out[i])
                if scores is not None:
                    tl = lp[j, : min(len(new) + 1, lp.shape[1])]  # the answer and its end-of-turn
                    row_scores[i] = {"mean": float(tl.mean()), "min": float(tl.min()), "sum": float(tl.sum()), "tokens": int(tl.numel())}
    model.train(was_training)
    if scores is not None:
        scores[:] = row_scores
    return out
