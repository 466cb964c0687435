"""Train stage: filter/kept.jsonl -> train/model/ (a saved student), metrics.json, loss_curve.png.

One training loop for every student kind (see base.TrainableStudent), so checkpoints, resume
after a kill, early stopping and the figures behave the same for the classifier and causal LM.
"""
from __future__ import annotations

import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from core.base import DistillError, read_jsonl, stable_hash, write_json
from core.rundir import STUDENT_META, RunDir
from student.base import Example
from student.config import StudentConfig

CKPT = "last.pt"


# ----------------------------------------------------------------------------- data
def load_examples(rd: RunDir) -> list[Example]:
    """Training pairs from filter/kept.jsonl (split == "train"; the holdout is for eval only)."""
    path = rd.filter_kept
    if not path.is_file():
        raise DistillError(f"{path} not found: run the filter stage first")
    out = []
    for n, r in enumerate(read_jsonl(path), 1):
        if r.get("split", "train") != "train":
            continue
        if not isinstance(r.get("response"), str) or not isinstance(r.get("messages"), list):
            raise DistillError(f"{path}:{n}: record {r.get('id')!r} lacks a response string or a messages list")
        out.append(Example(str(r["id"]), r["messages"], r["response"]))
    if not out:
        raise DistillError(f"{path}: no kept training records (split == 'train'); nothing to train on")
    return out


def in_fraction(key: str, fraction: float, salt: str) -> bool:
    """Stable pseudo-random membership: the same key lands on the same side on every run.
    Salted so the validation split is independent of ingest's holdout split (which hashes the
    bare id: unsalted, every training id would sit above the holdout cut)."""
    return int(stable_hash([salt, key]), 16) / 16**16 < fraction


def split_validation(examples: list[Example], fraction: float) -> tuple[list[Example], list[Example]]:
    if fraction <= 0 or len(examples) < 10:
        return examples, []
    val = [e for e in examples if in_fraction(e.id, fraction, "student-val")]
    train = [e for e in examples if not in_fraction(e.id, fraction, "student-val")]
    return (train, val) if train else (examples, [])


def choose_kind(cfg: StudentConfig, examples: list[Example]) -> str:
    """auto: a classifier when every output is categorical (JSON object of bounded-cardinality
    fields, or a bare label with many examples per value); otherwise generate text."""
    if cfg.kind != "auto":
        return cfg.kind
    from student.classifier import categorical_labels

    found = categorical_labels([e.target for e in examples], cfg.max_labels, cfg.min_examples_per_label)
    return "classifier" if found is not None else "causal_lm"


def student_class(kind: str):
    if kind == "classifier":
        from student.classifier import ClassifierStudent

        return ClassifierStudent
    from student.causal_lm import CausalLMStudent  # lazy: pulls the LM stack only when needed

    return CausalLMStudent


# ----------------------------------------------------------------------------- the loop
def train_loop(student: Any, cfg: StudentConfig, train: list[Example], val: list[Example], ckpt_dir: Path, fingerprint: str) -> dict[str, Any]:
    """AdamW + warmup/linear decay, validation every `eval_every_steps` (or epoch) with early
    stopping on val loss, an atomic checkpoint every `checkpoint_every_steps`; restores the best
    weights at the end. Returns the history dict for metrics.json."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    acc = accelerator(cfg)
    student.to(acc.device)
    # Data parallel: every process builds the same seeded epoch order and takes every world-th
    # batch, so a resumed or multi-process run needs no shared sampler state.
    rank, world = acc.process_index, acc.num_processes
    steps_per_epoch = math.ceil(math.ceil(len(train) / cfg.batch_size) / world)
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    warmup = int(cfg.warmup_ratio * total)
    opt = torch.optim.AdamW(student.param_groups(cfg), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
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
            st["best_val"], best_state = v["val_loss"], student.trainable_state()

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
    bar = tqdm(total=total, initial=st["step"], desc="train", unit="step", dynamic_ncols=True, mininterval=1.0, disable=not acc.is_main_process)
    params = [p for g in opt.param_groups for p in g["params"]]
    while st["step"] < total and not st["stopped_early"]:
        epoch, skip = divmod(st["step"], steps_per_epoch)
        batches = student.prepare_batches(train, cfg.batch_size, cfg.seed, epoch)
        batches = (batches + batches[: -len(batches) % world])[rank::world]  # equal shares: the all-reduce must pair up
        for b in batches[skip:]:
            student.train_mode(True)
            loss = student.loss(b)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            if world > 1:  # average gradients across processes (what DDP would do)
                for p in params:
                    if p.grad is not None:
                        p.grad = acc.reduce(p.grad, reduction="mean")
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            st["step"] += 1
            seen += _batch_len(b)
            lv = loss.item()
            st["train_losses"].append(round(lv, 5))
            bar.update(1)
            bar.set_postfix(loss=f"{lv:.4f}", refresh=False)
            if val and (st["step"] % eval_every == 0 or st["step"] == total):
                v = student.eval_loss(val)
                st["val"].append({"step": st["step"], **v})
                if v["val_loss"] < st["best_val"] - 1e-4:
                    st["best_val"], st["best_step"], st["bad"] = v["val_loss"], st["step"], 0
                    best_state = student.trainable_state()
                else:
                    st["bad"] += 1
                    st["stopped_early"] = cfg.early_stopping_patience > 0 and st["bad"] >= cfg.early_stopping_patience
                bar.write(f"step {st['step']}: " + ", ".join(f"{k}={x:.4f}" for k, x in v.items()))
            if st["step"] % cfg.checkpoint_every_steps == 0:
                checkpoint()
            if cfg.max_train_s and time.time() - t0 > cfg.max_train_s and not st["stopped_early"]:
                st["stopped_early"], st["stop_reason"] = True, f"max_train_s={cfg.max_train_s}"
                if val and (not st["val"] or st["val"][-1]["step"] != st["step"]):
                    v = student.eval_loss(val)  # so the best-weights choice sees the last step too
                    st["val"].append({"step": st["step"], **v})
                    if v["val_loss"] < st["best_val"] - 1e-4:
                        st["best_val"], st["best_step"], best_state = v["val_loss"], st["step"], student.trainable_state()
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
            "device": str(acc.device), "processes": world, "is_main_process": acc.is_main_process,
            "loop_s": round(train_s, 2), "examples_per_s": round(seen / train_s, 2) if train_s > 0 and seen else None}


def _batch_len(b: Any) -> int:
    ids = getattr(b, "input_ids", None)
    return int(ids.shape[0]) if ids is not None else len(b) if hasattr(b, "__len__") else 1


def accelerator(cfg: StudentConfig):
    """accelerate's Accelerator for cfg.device: it picks the GPU of this process (one per process
    under `accelerate launch`) and owns the process group that averages gradients."""
    import torch
    from accelerate import Accelerator

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise DistillError("student.device=cuda, but torch sees no GPU here: set student.device to auto or cpu")
    return Accelerator(cpu=cfg.device == "cpu")


# ----------------------------------------------------------------------------- the stage
def auto_threads() -> int:
    """Cores not busy right now. torch's OpenMP threads spin on barriers: on a 2-core machine with
    other work running, 2 threads measured 3-4x slower than 1 (fwd+bwd 3.7 vs 16 ex/s); on an idle
    one 2 threads ran 1.5-1.7x faster than 1. CPU use is sampled for a second rather than read
    from the 1-minute load average, which still counts the replay that just ended."""
    cores = os.cpu_count() or 1
    try:
        import psutil

        busy = psutil.cpu_percent(interval=1.0) / 100 * cores
    except Exception:  # noqa: BLE001 - no psutil, or no /proc: fall back to the load average
        busy = os.getloadavg()[0]
    return max(1, min(cores, int(cores - busy + 0.5)))


def run_train(cfg: StudentConfig, rd: RunDir) -> dict:
    import torch

    t0 = time.time()
    threads = cfg.num_threads or auto_threads()
    torch.set_num_threads(threads)
    examples = load_examples(rd)
    kind = choose_kind(cfg, examples)
    train, val = split_validation(examples, cfg.val_fraction)
    out_dir = rd.stage_dir("train")
    ckpt_dir = rd.checkpoints_dir
    fingerprint = stable_hash([cfg.model_dump(mode="json"), kind, [e.id for e in train], [e.id for e in val], [e.target for e in examples]])
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)

    cls = student_class(kind)
    if hasattr(cls, "prepare_batches"):
        student = cls.create(cfg, examples)
        hist = train_loop(student, cfg, train, val, ckpt_dir, fingerprint)
    elif hasattr(cls, "fit"):  # a kind with its own loop: fit(cfg, train, val, ckpt_dir) -> (student, history)
        student, hist = cls.fit(cfg, train, val, ckpt_dir)
    else:
        raise DistillError(f"student kind {kind!r}: {cls.__name__} has neither the TrainableStudent hooks nor fit()")
    if not hist.get("is_main_process", True):
        return {}  # under `accelerate launch`, only the main process writes the model and figures

    model_dir = rd.model_dir
    tmp_dir = model_dir.with_name("model.tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    student.save(tmp_dir)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(tmp_dir, model_dir)  # readers never see a half-written model
    if hasattr(student, "save_probe"):  # the no-fine-tuning comparator the eval scores beside the student
        shutil.rmtree(rd.probe_dir, ignore_errors=True)
        student.save_probe(rd.probe_dir)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # done: a rerun should train afresh, not resume

    wall = time.time() - t0
    tl = hist.get("train_losses") or []
    tail = tl[-max(1, min(50, len(tl) // 10 or 1)):]
    vals = hist.get("val", [])
    best_val = next((v for v in vals if v.get("final")), None) or next((v for v in vals if v["step"] == hist.get("best_step")), None)
    figures = {
        "kind": kind,
        "steps": hist.get("step"),
        "examples_per_s": hist.get("examples_per_s"),
        "train_loss": round(sum(tail) / len(tail), 5) if tail else None,
        "val_loss": round(best_val["val_loss"], 5) if best_val else None,
        "val_accuracy": round(best_val["val_accuracy"], 5) if best_val and "val_accuracy" in best_val else None,
        "wall_s": round(wall, 2),
        "threads": threads,
        "device": hist.get("device", "cpu"),
        "processes": hist.get("processes", 1),
    }
    metrics = {**figures, "train_examples": len(train), "val_examples": len(val), "best_step": hist.get("best_step"),
               "stopped_early": hist.get("stopped_early"), "resumed_from_step": hist.get("resumed_from_step"),
               "warm_start_train_accuracy": hist.get("warm_start"), "total_steps": hist.get("total_steps"),
               "finalize": hist.get("finalize"), "stop_reason": hist.get("stop_reason"),
               "val_history": hist.get("val"), "train_losses": tl, "config": cfg.model_dump(mode="json")}
    write_json(rd.train_metrics, metrics)
    plot_loss_curve(tl, hist.get("val", []), out_dir / "loss_curve.png", title=f"{kind} student ({rd.run_id})")
    rd.record_stage("train", counts={"train_examples": len(train), "val_examples": len(val)}, figures=figures,
                    inputs=[rd.filter_kept], outputs=[model_dir / STUDENT_META, rd.train_metrics],
                    config=cfg, started=t0)
    return metrics


def plot_loss_curve(train_losses: list[float], val: list[dict], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless; never opens a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train_losses:
        w = max(1, len(train_losses) // 50)  # moving average: per-batch loss is noisy
        smooth = [sum(train_losses[max(0, i - w + 1) : i + 1]) / len(train_losses[max(0, i - w + 1) : i + 1]) for i in range(len(train_losses))]
        ax.plot(range(1, len(smooth) + 1), smooth, label="train loss (smoothed)")
    steps = [v for v in val if not v.get("final")]
    if steps:
        ax.plot([v["step"] for v in steps], [v["val_loss"] for v in steps], "o-", label="val loss")
    for v in val:
        if v.get("final"):
            ax.plot([v["step"]], [v["val_loss"]], "r*", markersize=12, label="val loss, final weights")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
