"""Our training loop, for kinds that expose the TrainableStudent hooks (the classifier: its frozen
lower layers are cached once and the linear probe warm-starts the heads, which no stock trainer
does). Checkpoints, resume after a kill, early stopping and multi-process training behave as the
causal LM's TRL SFTTrainer does them (student/lm_trainer.py).

Multi-process (`accelerate launch` / torchrun): accelerate wraps the student's modules in DDP
(`accelerator.prepare`), so gradients are averaged during backward. Batches are not sharded by a
prepared DataLoader: every process builds the same seeded epoch order and takes every world-th
batch, which keeps mid-epoch resume exact without sampler state.
"""
from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any

from core.base import DistillError
from student.base import Example

CKPT = "last.pt"


def accelerator(cfg: Any):
    """accelerate's Accelerator for cfg.device: it picks the GPU of this process (one per process
    under `accelerate launch`) and owns the process group DDP averages gradients over."""
    import torch
    from accelerate import Accelerator

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise DistillError("student.device=cuda, but torch sees no GPU here: set student.device to auto or cpu")
    return Accelerator(cpu=cfg.device == "cpu")


def _loss_module(student: Any):
    """One nn.Module holding the student's trainable modules whose forward is the student's loss:
    what DDP wraps. Its submodules are the student's own objects, so the student's other hooks
    (eval_loss, trainable_state, save) see the trained weights without unwrapping."""
    import torch

    class LossModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.parts = torch.nn.ModuleDict(student.torch_modules())

        def forward(self, batch: Any):
            return student.loss(batch)

    return LossModule()


def _schedule(warmup: int, total: int):
    return lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))


def train_loop(student: Any, cfg: Any, train: list[Example], val: list[Example], ckpt_dir: Path, fingerprint: str) -> dict[str, Any]:
    """AdamW + warmup/linear decay, validation every `eval_every_steps` (or epoch) with early
    stopping on val loss, an atomic checkpoint every `checkpoint_every_steps`; restores the best
    weights at the end. Returns the history dict for metrics.json."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    acc = accelerator(cfg)
    student.to(acc.device)
    rank, world = acc.process_index, acc.num_processes
    batches_per_epoch = math.ceil(len(train) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / world)  # per process
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    # The LR schedule is written in single-process steps: a prepared scheduler steps once per
    # process per optimizer step (accelerate's convention), so any world size follows one curve.
    sched_total = total * world
    opt = torch.optim.AdamW(student.param_groups(cfg), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(int(cfg.warmup_ratio * sched_total), sched_total))
    eval_every = cfg.eval_every_steps or steps_per_epoch
    st: dict[str, Any] = {"step": 0, "best_val": math.inf, "best_step": 0, "bad": 0, "train_losses": [], "val": [], "warm_start": None, "stopped_early": False}
    best_state = None
    ckpt_path = ckpt_dir / CKPT
    resumed_from = None

    if cfg.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck.get("fingerprint") == fingerprint:
            student.load_trainable_state(ck["trainable"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["torch_rng"])
            st, best_state = ck["state"], ck["best_state"]
            resumed_from = st["step"]
    if resumed_from is None:
        if getattr(cfg, "linear_probe_init", False) and hasattr(student, "warm_start"):
            st["warm_start"] = student.warm_start(train)
        if val:  # step-0 validation: the baseline the fine-tuning must beat (and the fallback)
            v = student.eval_loss(val)
            st["val"].append({"step": 0, **v})
            st["best_val"], best_state = _score(v, cfg), student.trainable_state()
    # After resume/warm start: DDP broadcasts rank 0's weights at construction.
    model, opt, sched = acc.prepare(_loss_module(student), opt, sched)

    def any_process(flag: bool) -> bool:
        """A stop decision every process takes together (one stopping alone would leave the
        others waiting in the next gradient all-reduce)."""
        if world == 1:
            return flag
        return bool(acc.gather(torch.tensor([float(flag)], device=acc.device)).max() > 0)

    def validate() -> None:
        v = student.eval_loss(val)
        st["val"].append({"step": st["step"], **v})
        score = _score(v, cfg)
        if _better(score, st["best_val"]):
            nonlocal best_state
            st["best_val"], st["best_step"], st["bad"] = score, st["step"], 0
            best_state = student.trainable_state()
        else:
            st["bad"] += 1

    def checkpoint() -> None:
        if not acc.is_main_process:
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_dir / (CKPT + ".tmp")
        torch.save({"fingerprint": fingerprint, "trainable": student.trainable_state(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(), "state": st, "best_state": best_state}, tmp)
        os.replace(tmp, ckpt_path)  # atomic: a kill mid-write leaves the previous checkpoint intact

    t0 = time.time()
    seen = 0
    bar = tqdm(total=total, initial=st["step"], desc="train", unit="step", dynamic_ncols=True, mininterval=1.0, disable=not acc.is_main_process or bool(os.environ.get("TQDM_DISABLE")))
    while st["step"] < total and not st["stopped_early"]:
        epoch, skip = divmod(st["step"], steps_per_epoch)
        batches = student.prepare_batches(train, cfg.batch_size, cfg.seed, epoch)
        batches = (batches + batches[: -len(batches) % world])[rank::world]  # equal shares, as DDP needs
        for b in batches[skip:]:
            student.train_mode(True)
            loss = model(b)
            acc.backward(loss)
            acc.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            st["step"] += 1
            seen += _batch_len(b)
            lv = float(acc.gather(loss.detach()[None]).mean())  # the loss over all processes' batches
            st["train_losses"].append(round(lv, 5))
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.4f}", refresh=False)
            if val and (st["step"] % eval_every == 0 or st["step"] == total):
                validate()  # every process validates the same weights on the same split
                bar.write(f"step {st['step']}: " + ", ".join(f"{k}={x:.4f}" for k, x in st["val"][-1].items() if k != "step"))
                st["stopped_early"] = any_process(cfg.early_stopping_patience > 0 and st["bad"] >= cfg.early_stopping_patience)
            if st["step"] % cfg.checkpoint_every_steps == 0:
                checkpoint()
            if cfg.max_train_s and not st["stopped_early"] and any_process(time.time() - t0 > cfg.max_train_s):
                st["stopped_early"], st["stop_reason"] = True, f"max_train_s={cfg.max_train_s}"
                if val and st["val"][-1]["step"] != st["step"]:
                    validate()  # so the best-weights choice sees the last step too
            if st["step"] >= total or st["stopped_early"]:
                break
    bar.close()
    train_s = time.time() - t0
    if best_state is not None:
        student.load_trainable_state(best_state)
    else:
        st["best_step"] = st["step"]
    if val and hasattr(student, "finalize"):  # kind-specific post-processing on the val split
        st["finalize"] = student.finalize(val, train)
        if st["finalize"].get("val_loss") is not None:
            st["val"].append({"step": st["best_step"], "final": True, **{k: st["finalize"][k] for k in ("val_loss", "val_accuracy") if k in st["finalize"]}})
    return {**st, "total_steps": total, "steps_per_epoch": steps_per_epoch, "resumed_from_step": resumed_from,
            "device": str(acc.device), "processes": world, "is_main_process": acc.is_main_process, "wrapped_as": type(model).__name__,
            "loop_s": round(train_s, 2), "examples_per_s": round(seen / train_s, 2) if train_s > 0 and seen else None}


def _score(v: dict[str, float], cfg: Any) -> list[float]:
    """A validation result as a key to minimise: [loss], or [-accuracy, loss] (ties by the loss)."""
    if getattr(cfg, "best_metric", "val_loss") == "val_accuracy":
        if "val_accuracy" not in v:
            raise DistillError("student.best_metric=val_accuracy: this student kind reports no validation accuracy; use val_loss")
        return [-v["val_accuracy"], v["val_loss"]]
    return [v["val_loss"]]


def _better(a: list[float], b: list[float] | float) -> bool:
    """a beats b by more than float noise on its first differing entry (b = inf: nothing yet)."""
    if not isinstance(b, list):
        return True
    for x, y in zip(a, b):
        if x < y - 1e-4:
            return True
        if x > y + 1e-4:
            return False
    return False


def _batch_len(b: Any) -> int:
    ids = b.get("input_ids") if isinstance(b, dict) else getattr(b, "input_ids", None)
    return int(ids.shape[0]) if ids is not None else len(b) if hasattr(b, "__len__") else 1
