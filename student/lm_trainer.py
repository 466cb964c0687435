"""Causal-LM training through TRL's SFTTrainer (issue #11: bench/train_lm.py measured our own loop
and SFTTrainer at a tie, ours/TRL x1.03, so the library does the job).

    model, hist = train_sft(model, tok, train_rows, val_rows, cfg, ckpt_dir, fingerprint, progress)

- Data: rows tokenized by student/lm_data.encode_example (so the prompt tokens are exactly the ones
  predict() feeds, and an over-long prompt is cut from the left, keeping the answer), handed to
  TRL as a processed prompt-completion dataset: input_ids + completion_mask, completion-only loss.
  padding_free=True: each batch is one flat sequence with position_ids, no pad tokens;
  max_length=None because the rows are already truncated (TRL's own advice for padding-free).
- The same LoRA as peft_config, float32 on the CPU (bf16 autocast on a GPU that has it), no
  gradient checkpointing (TRL's default; it only slows a model this small).
- Checkpoints: Trainer's checkpoint-N/ folders under ckpt_dir (adapter, optimizer, scheduler, RNG,
  trainer state incl. the early-stopping counter); resume picks the newest complete one when the
  fingerprint (config + data) matches, else the folder is cleared. Trainer restores the RNG and
  skips the epoch's already-trained batches (accelerate's seedable sampler), so resume is exact.
- Early stopping: EarlyStoppingCallback on eval_loss; load_best_model_at_end keeps the best
  weights. That needs the best step on disk, so when checkpoint_every_steps is not a multiple of
  the validation interval a checkpoint is also written at every validation.
- _Guard (a TrainerCallback): the periodic checkpoints, the max_train_s wall-clock stop (decided
  by all processes together), and the timing that keeps validation out of tokens/s.
Multi-process: Trainer runs DDP itself under `accelerate launch` / torchrun.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from core.base import DistillError

FINGERPRINT = "fingerprint.txt"
_STATE = "trainer_state.json"


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete checkpoint-N/ (trainer_state.json is written last, so a folder a kill
    interrupted mid-write lacks it and is skipped)."""
    done = [p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and (p / _STATE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1])) if done else None


def resume_point(ckpt_dir: Path, fingerprint: str, resume: bool, is_main: bool) -> Path | None:
    """The checkpoint to resume from, or None after clearing a stale folder (other config/data)."""
    fp = ckpt_dir / FINGERPRINT
    same = fp.is_file() and fp.read_text().strip() == fingerprint
    found = last_checkpoint(ckpt_dir) if resume and same else None
    if found is None and is_main:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        fp.write_text(fingerprint + "\n")
    return found


def _callbacks():
    from transformers import ProgressCallback, TrainerCallback

    class Guard(TrainerCallback):
        def __init__(self, every: int, max_s: float | None) -> None:
            self.every, self.max_s, self.trainer = every, max_s, None
            self.train_s, self.stop_reason = 0.0, None

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = self.mark = time.time()
            self.step0, self.tokens0 = state.global_step, state.num_input_tokens_seen

        def on_step_end(self, args, state, control, **kw):
            now = time.time()
            self.train_s += now - self.mark  # validation happens after this hook and is skipped below
            self.mark = now
            if state.global_step % self.every == 0:
                control.should_save = True
            if self.max_s and state.global_step < state.max_steps and self._anyone(now - self.t0 > self.max_s):
                self.stop_reason = f"max_train_s={self.max_s}"
                control.should_training_stop = True
                if args.eval_strategy != "no":  # so the best-weights choice sees this last step too
                    control.should_evaluate = control.should_save = True
            return control

        def on_evaluate(self, args, state, control, **kw):
            self.mark = time.time()

        def _anyone(self, flag: bool) -> bool:
            """A stop every process takes together (one stopping alone would leave the others
            waiting in the next gradient all-reduce)."""
            acc = self.trainer.accelerator
            if acc.num_processes == 1:
                return flag
            import torch

            return bool(acc.gather(torch.tensor([float(flag)], device=acc.device)).max() > 0)

    class Bar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kw):  # validation lines only, not a dict per step
            if logs and "eval_loss" in logs and self.training_bar is not None:
                self.training_bar.write(f"step {state.global_step}: val_loss={logs['eval_loss']:.4f}")

    return Guard, Bar


def train_sft(model, tok, train_rows: list[dict], val_rows: list[dict], cfg: Any, ckpt_dir: Path, fingerprint: str,
              progress: bool = True) -> tuple[Any, dict]:
    """Train LoRA on `model` (a plain HF causal LM) with SFTTrainer; returns (the trained peft model
    with the best weights loaded, history dict for metrics.json / fit()'s figures)."""
    import datasets
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback, PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise DistillError("student.device=cuda, but torch sees no GPU here: set student.device to auto or cpu")
    if getattr(cfg, "best_metric", "val_loss") != "val_loss":
        raise DistillError(f"student.best_metric={cfg.best_metric}: the causal LM is validated by its loss only; set student.best_metric to val_loss")
    cuda = cfg.device != "cpu" and torch.cuda.is_available()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    is_main = int(os.environ.get("RANK", "0")) == 0
    ckpt_dir = Path(ckpt_dir)
    start = resume_point(ckpt_dir, fingerprint, cfg.resume, is_main)
    if not progress:
        datasets.disable_progress_bars()

    def dataset(rows: list[dict]):
        return Dataset.from_list([{"input_ids": r["input_ids"], "completion_mask": [int(x != -100) for x in r["labels"]]} for r in rows])

    has_val = bool(val_rows)
    steps_per_epoch = math.ceil(len(train_rows) / (cfg.batch_size * world))
    eval_every = cfg.eval_every_steps or steps_per_epoch
    save_every = cfg.checkpoint_every_steps if not has_val or cfg.checkpoint_every_steps % eval_every == 0 else eval_every
    args = SFTConfig(
        output_dir=str(ckpt_dir), per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=16,
        num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio, lr_scheduler_type="linear", max_grad_norm=1.0, seed=cfg.seed,  # warmup < 1: a ratio
        padding_free=True, max_length=None, completion_only_loss=True, activation_checkpointing=False,
        use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(), dataloader_num_workers=0,
        logging_strategy="steps", logging_steps=1, include_num_input_tokens_seen="all",
        eval_strategy="steps" if has_val else "no", eval_steps=eval_every if has_val else None,
        eval_on_start=has_val and start is None,  # step 0: the baseline fine-tuning must beat
        save_strategy="steps", save_steps=save_every, save_total_limit=1,  # + the best one, kept by Trainer
        load_best_model_at_end=has_val, metric_for_best_model="eval_loss", greater_is_better=False,
        report_to="none", disable_tqdm=not progress or not is_main)
    lcfg = cfg.lora
    peft = LoraConfig(r=lcfg.r, lora_alpha=lcfg.alpha, lora_dropout=lcfg.dropout, task_type="CAUSAL_LM",
                      # all-linear: the adapter can reshape MLPs too, which matters for learning a new output format
                      target_modules=lcfg.target_modules or "all-linear")
    Guard, Bar = _callbacks()
    guard = Guard(cfg.checkpoint_every_steps, cfg.max_train_s)
    callbacks = [guard] + ([EarlyStoppingCallback(cfg.early_stopping_patience, 1e-4)] if has_val and cfg.early_stopping_patience else [])
    torch.manual_seed(cfg.seed)  # LoRA init is random: same seed -> same start
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset(train_rows), eval_dataset=dataset(val_rows) if has_val else None,
                         processing_class=tok, peft_config=peft, callbacks=callbacks)
    guard.trainer = trainer
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress and is_main:
        trainer.add_callback(Bar)
    trainer.train(resume_from_checkpoint=str(start) if start else None)

    st = trainer.state
    logs = st.log_history
    stopped = st.global_step < st.max_steps
    tokens = st.num_input_tokens_seen - guard.tokens0
    hist = {
        "step": st.global_step, "total_steps": st.max_steps, "steps_per_epoch": steps_per_epoch,
        "best_step": st.best_global_step if has_val and st.best_global_step else st.global_step,
        "stopped_early": stopped, "stop_reason": guard.stop_reason or ("early_stopping" if stopped else None),
        "resumed_from_step": guard.step0 if start else None,
        "train_losses": [round(e["loss"], 5) for e in logs if "loss" in e],
        "val": [{"step": e["step"], "val_loss": e["eval_loss"]} for e in logs if "eval_loss" in e],
        "train_s": round(guard.train_s, 2), "train_tokens": tokens, "tokens_per_s": round(tokens / guard.train_s, 1) if tokens else None,
        "device": str(trainer.args.device), "processes": trainer.accelerator.num_processes,
        "is_main_process": trainer.is_world_process_zero(), "wrapped_as": "trl.SFTTrainer",
        "checkpoint_every_steps": cfg.checkpoint_every_steps, "save_steps": save_every,
    }
    n_tok = sum(len(r["input_ids"]) for r in train_rows)
    hist["examples_per_s"] = round(hist["tokens_per_s"] * len(train_rows) / n_tok, 3) if tokens and n_tok else None  # via mean row length
    return trainer.model, hist
