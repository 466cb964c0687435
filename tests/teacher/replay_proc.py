"""Run one replay in its own process (the acceptance test SIGKILLs it): argv = config JSON, run dir, ledger."""
import json
import sys
from pathlib import Path

from core.rundir import RunDir
from teacher.config import TeacherConfig
from teacher.replay import run_replay

if __name__ == "__main__":
    cfg = TeacherConfig.model_validate_json(sys.argv[1])
    out = run_replay(cfg, RunDir(sys.argv[2]), Path(sys.argv[3]))
    print("RESULT " + json.dumps(out), flush=True)
