"""Bench: causal-LM student (SmolLM2-135M-Instruct + LoRA) on NLU++ banking, CPU.

    python bench/train_lm.py [--n-train 400 --epochs 2 --n-eval 150 --baseline-steps 12 ...]
    python bench/train_lm.py --quick        # throughput only (steps 1-3 skipped): a few minutes

1. Splits examples/nluplusplus/prompt_log.jsonl.gz like ingest does (15 % holdout by a stable
   hash of the id: ingest.pipeline.in_holdout), trains on a stable-hash sample of the rest.
2. Trains with CausalLMStudent.fit (baked system prompt, length-bucketed batches, assistant-only
   loss), saves it (adapter + merged), reloads the merged model and predicts the holdout sample.
3. Quality on the holdout: parse-valid JSON rate, exact-JSON agreement (parsed objects equal),
   intent micro-F1, slot micro-F1.
4. Throughput: the student's training (CausalLMStudent.fit, which since issue #11 runs TRL's
   SFTTrainer through student/lm_trainer.py: our tokenization, callbacks for checkpoints/guard,
   per-step logging) vs a bare SFTTrainer configured as its docs recommend (conversational
   prompt-completion data, completion-only loss, padding_free=True; same model, same LoRA, same
   rows), alternated in short paired rounds on the same examples (the shared CPU's speed drifts);
   real (non-pad) tokens per second, medians. Before the switch, "ours" was our own loop
   (student/loop.py, padded length-bucketed batches, LM head at labelled positions only): it
   measured x1.03 of SFTTrainer over 8 paired rounds (1 thread) - a tie, hence the switch.
Ends with ONE JSON line of figures.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
# not bench/ itself on the path: bench/select.py would shadow the stdlib's select module
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from core.base import stable_hash  # noqa: E402
from ingest.pipeline import in_holdout  # noqa: E402
from student.config import CausalLMStudentConfig, LoraConfig  # noqa: E402

LOG = REPO / "examples" / "nluplusplus" / "prompt_log.jsonl.gz"


def load_split(holdout_fraction: float = 0.15) -> tuple[list[dict], list[dict]]:
    train, hold = [], []
    with gzip.open(LOG, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            ex = {"id": r["id"], "messages": r["messages"], "response": r["response"]["content"]}
            (hold if in_holdout(r["id"], holdout_fraction) else train).append(ex)
    key = lambda e: stable_hash(["bench", e["id"]])  # noqa: E731  deterministic shuffle
    return sorted(train, key=key), sorted(hold, key=key)


def parse(text: str) -> dict | None:
    try:
        obj = json.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("intents"), list) or not isinstance(obj.get("slots"), dict):
        return None
    return obj


def micro_f1(pairs: list[tuple[set, set]]) -> float:
    tp = sum(len(p & g) for p, g in pairs)
    fp = sum(len(p - g) for p, g in pairs)
    fn = sum(len(g - p) for p, g in pairs)
    return 2 * tp / max(1, 2 * tp + fp + fn)


def quality(preds: list[str], golds: list[str]) -> dict:
    parsed = [parse(p) for p in preds]
    gold = [json.loads(g) for g in golds]
    empty = {"intents": [], "slots": {}}  # an unparseable answer counts as predicting nothing
    ints = [(set(map(str, (p or empty)["intents"])), set(g["intents"])) for p, g in zip(parsed, gold)]
    slots = [({(k, str(v)) for k, v in (p or empty)["slots"].items()}, set(g["slots"].items())) for p, g in zip(parsed, gold)]
    return {
        "parse_valid_rate": round(sum(p is not None for p in parsed) / len(preds), 4),
        "exact_json_agreement": round(sum(p == g for p, g in zip(parsed, gold)) / len(preds), 4),
        "exact_text_agreement": round(sum(p == g for p, g in zip(preds, golds)) / len(preds), 4),
        "intent_micro_f1": round(micro_f1(ints), 4),
        "slot_micro_f1": round(micro_f1(slots), 4),
    }


def trl_sft_tokens_per_s(cfg: CausalLMStudentConfig, train: list[dict], out: Path) -> dict:
    """TRL's SFTTrainer as its docs recommend for this job: a conversational prompt-completion
    dataset (loss on the completion only, the default for that format), padding_free=True (rows
    concatenated, no pad tokens; transformers' SDPA path keeps them apart with a block-diagonal
    mask built from position_ids), the same LoRA passed as peft_config. One epoch over `train`.
    Like for like with ours: float32 and no gradient checkpointing (TRL defaults to bf16 and
    checkpointing, both memory savers; on this CPU they would only slow it)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig as PeftLora
    from trl import SFTConfig, SFTTrainer

    from student.causal_lm import _ensure_pad, load_base
    from student.lm_data import ChatFormat, bake_messages

    tok, model, _ = load_base(cfg.base_model, cfg.cache_dir)
    _ensure_pad(tok, ChatFormat.detect(tok))
    torch.manual_seed(cfg.seed)
    data = Dataset.from_list([{"prompt": bake_messages(e["messages"], cfg.bake_system_prompt),
                               "completion": [{"role": "assistant", "content": e["response"]}]} for e in train])
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=cfg.batch_size, num_train_epochs=1,
                     learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_ratio,  # a float < 1 is a ratio
                     lr_scheduler_type="linear", max_grad_norm=1.0, padding_free=True, max_length=None,
                     completion_only_loss=True, gradient_checkpointing=False, bf16=False, use_cpu=True,
                     logging_steps=10**6, save_strategy="no", report_to=[], disable_tqdm=True, seed=cfg.seed,
                     dataloader_num_workers=0)
    peft = PeftLora(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="CAUSAL_LM",
                    target_modules=cfg.lora.target_modules or "all-linear")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok, peft_config=peft)
    rows = trainer.train_dataset
    tokens = sum(len(x) for x in rows["input_ids"])  # real tokens: padding-free has none to discount
    labelled = sum(sum(x != -100 for x in r) for r in rows["labels"])
    trainer.train()  # runtime includes the slower first step, as ours does
    rt = trainer.state.log_history[-1]["train_runtime"]
    return {"steps": trainer.state.global_step, "train_runtime_s": round(rt, 2), "real_tokens": tokens, "labelled_tokens": labelled,
            "tokens_per_s": round(tokens / rt, 1), "examples_per_s": round(len(train) / rt, 3)}


def paired_throughput(cfg: CausalLMStudentConfig, train: list[dict], rounds: int, steps: int, out: Path) -> dict:
    """The student's fit() (TRL inside) vs a bare TRL SFTTrainer, alternated round by round on the same `steps` batches of examples:
    on a shared CPU the available compute drifts by minutes, so back-to-back pairs compare like with like."""
    from student.causal_lm import CausalLMStudent

    sub = train[: steps * cfg.batch_size]  # one epoch of `sub` = `steps` steps for both sides: the same rows
    quick = cfg.model_copy(update={"epochs": 1.0, "checkpoint_every_steps": 10**6, "eval_every_steps": None})
    ours, trl, last = [], [], {}
    for r in range(rounds):
        f = CausalLMStudent().fit(sub, [], quick, out / f"paired-{r}", progress=False)
        ours.append(f["tokens_per_s"])
        last = trl_sft_tokens_per_s(cfg, sub, out / f"trl-{r}")
        trl.append(last["tokens_per_s"])
        print(f"paired round {r}: student fit (TRL) {ours[-1]} tok/s ({f['train_tokens']} tokens), TRL SFTTrainer {trl[-1]} tok/s "
              f"({last['real_tokens']} tokens, {last['steps']} steps)", flush=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return {"ours_tokens_per_s": med(ours), "trl_tokens_per_s": med(trl), "speedup": round(med([o / t for o, t in zip(ours, trl)]), 2),
            "rounds": rounds, "steps_per_side": steps, "ours_all": ours, "trl_all": trl, "trl_real_tokens": last.get("real_tokens")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=400)
    ap.add_argument("--n-val", type=int, default=40)
    ap.add_argument("--n-eval", type=int, default=150, help="holdout examples to generate for (0 = all)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--baseline-steps", type=int, default=6, help="steps per side in each paired throughput round")
    ap.add_argument("--paired-rounds", type=int, default=3, help="alternating ours/TRL throughput rounds (median reported)")
    ap.add_argument("--quick", action="store_true", help="throughput rounds only: no full fit, no holdout generation")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; on a shared, oversubscribed CPU 1 beat 2 by 4x here")
    ap.add_argument("--out", type=Path, default=None, help="work dir (checkpoints, saved model); default: a temp dir")
    a = ap.parse_args()

    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from student.causal_lm import CausalLMStudent

    pool, hold = load_split()
    train, val = pool[: a.n_train], pool[a.n_train: a.n_train + a.n_val]
    hold_eval = hold[: a.n_eval] if a.n_eval else hold
    out = a.out or Path(tempfile.mkdtemp(prefix="bench-lm-"))
    cfg = CausalLMStudentConfig(batch_size=a.batch_size, epochs=a.epochs, learning_rate=a.lr, max_seq_length=a.max_seq_length,
                                max_new_tokens=64, eval_every_steps=max(1, len(train) // a.batch_size // 2), early_stopping_patience=2,
                                checkpoint_every_steps=25, warmup_ratio=0.05, seed=0, lora=LoraConfig(r=16, alpha=32, dropout=0.05))
    t0 = time.time()
    result: dict = {"bench": "train_lm", "model": "SmolLM2-135M-Instruct (bundled) + LoRA r16 all-linear",
                    "trainer": "trl.SFTTrainer (student/lm_trainer.py)", "load_avg_start": os.getloadavg()[0],
                    "baseline": "trl.SFTTrainer (prompt-completion, completion-only loss, padding_free=True, fp32, no grad checkpointing)",
                    "threads": torch.get_num_threads(), "quick": a.quick}
    if not a.quick:
        student = CausalLMStudent()
        figs = student.fit(train, val, cfg, out / "work")
        print(f"fit: {json.dumps({k: v for k, v in figs.items() if k != 'val_history'})}", flush=True)
        student.save(out / "model")
        loaded = CausalLMStudent.load(out / "model")
        t1 = time.time()
        preds = loaded.predict([e["messages"] for e in hold_eval])
        gen_s = time.time() - t1
        q = quality(preds, [e["response"] for e in hold_eval])
        gen_tokens = sum(len(loaded.tok(p, add_special_tokens=False)["input_ids"]) + 1 for p in preds)
        bad = [(e["id"], p) for e, p in zip(hold_eval, preds) if parse(p) is None][:3]
        print(f"quality: {json.dumps(q)}  unparseable examples: {bad}", flush=True)
        del loaded
        result.update({
            "train_examples": len(train), "val_examples": len(val), "holdout_eval_examples": len(hold_eval), "holdout_total": len(hold),
            "epochs": a.epochs, "steps": figs["steps"], "best_step": figs["best_step"], "stopped_early": figs["stopped_early"],
            "train_loss": figs["train_loss"], "val_loss": figs["val_loss"], "fit_wall_s": figs["wall_s"],
            "full_run_tokens_per_s": figs["tokens_per_s"], "full_run_examples_per_s": figs["examples_per_s"],
            "prompt_tokens_saved_per_request": figs["prompt_tokens_saved_per_request"],
            **q, "generate_s": round(gen_s, 1), "generated_tokens_per_s": round(gen_tokens / gen_s, 1)})
    pair = paired_throughput(cfg, train, a.paired_rounds, a.baseline_steps, out / "throughput")
    print(f"{'(median of ' + str(a.paired_rounds) + ' rounds)':28}{'fit(TRL)':>10}{'bare TRL':>10}\n{'train tokens/s (real)':28}"
          f"{pair['ours_tokens_per_s']:>10}{pair['trl_tokens_per_s']:>10}   fit/bare x{pair['speedup']}", flush=True)
    result.update({"tokens_per_s": pair["ours_tokens_per_s"], "trl_sft_tokens_per_s": pair["trl_tokens_per_s"],
                   "speedup_vs_trl_sft": pair["speedup"], "paired_rounds": pair["rounds"], "paired_steps_per_side": pair["steps_per_side"],
                   "ours_all": pair["ours_all"], "trl_all": pair["trl_all"], "total_wall_s": round(time.time() - t0, 1),
                   "load_avg_end": os.getloadavg()[0]})
    print(json.dumps(result))

if __name__ == "__main__":
    main()
