"""One process of a data-parallel train stage (run under torch.distributed.run by the test):
python ddp_train_proc.py RUN_DIR TINY_MODEL_DIR"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_classifier import tiny_cfg  # noqa: E402

from core.rundir import RunDir  # noqa: E402
from student.train import run_train  # noqa: E402

run_dir, model = Path(sys.argv[1]), Path(sys.argv[2])
out = run_train(tiny_cfg(model, device="cpu", epochs=4, val_fraction=0.0), RunDir(run_dir))
print("RESULT " + json.dumps({k: out.get(k) for k in ("steps", "processes", "device", "wrapped_as")}), flush=True)
