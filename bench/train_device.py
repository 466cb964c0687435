"""Bench: train-stage throughput on this machine's device (CPU, or a GPU through accelerate).

    python bench/train_device.py [--device auto|cpu|cuda] [--n 4000] [--epochs 1]

Trains the classifier student through the real train stage (student.train.run_train) on
Banking77 queries from examples/banking77, with an encoder of all-MiniLM-L6-v2's shape (6 layers,
hidden 384, 12 heads) but random weights and a word-level tokenizer built from the data: the
figure is speed on the device, not accuracy (bench/train.py measures that with the real
weights, which are too large to carry to a GPU box). LoRA in every layer (train_layers=None),
so each step runs the whole encoder forward and backward.
Ends with ONE JSON line of figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.base import read_jsonl, write_jsonl  # noqa: E402
from core.rundir import RunDir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--n", type=int, default=4000, help="training examples")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import torch

    from student.config import ClassifierStudentConfig
    from student.models import make_tiny_encoder
    from student.train import run_train

    refs = list(read_jsonl(ROOT / "examples" / "banking77" / "reference_answers.jsonl"))[: args.n]
    tmp = Path(tempfile.mkdtemp(prefix="train-device-"))
    enc = make_tiny_encoder(tmp / "enc", [r["user"] for r in refs], hidden=384, layers=6, heads=12)
    rd = RunDir.create(tmp / "runs", "bench")
    write_jsonl(rd.path / "filter" / "kept.jsonl", [{"id": r["id"], "split": "train", "response": r["response"],
                                                      "messages": [{"role": "user", "content": r["user"]}]} for r in refs])
    cfg = ClassifierStudentConfig(base_model=str(enc), device=args.device, epochs=args.epochs, batch_size=args.batch_size,
                        train_layers=None, linear_probe_init=False, interpolate=False, val_fraction=0.05, checkpoint_every_steps=10_000)
    t0 = time.time()
    m = run_train(cfg, rd)
    wall = time.time() - t0
    fig = {"device": m["device"], "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "train_examples": m["train_examples"], "steps": m["steps"], "examples_per_s": m["examples_per_s"],
           "stage_wall_s": round(wall, 1), "train_loss": m["train_loss"], "val_loss": m["val_loss"],
           "threads": m["threads"], "torch": torch.__version__}
    print(f"{fig['device']}: {fig['examples_per_s']} examples/s over {fig['steps']} steps ({fig['stage_wall_s']} s stage wall)")
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
