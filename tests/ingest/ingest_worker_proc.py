"""One ingest worker in its own process: python ingest_worker_proc.py <config json> <data dir>.
Prints the run's counts as one JSON line (a stand-in for a Prefect worker running the stage)."""
import json
import sys
from pathlib import Path

from core.rundir import RunDir
from ingest.config import IngestConfig
from ingest.pipeline import run_ingest

if __name__ == "__main__":
    cfg = IngestConfig.model_validate(json.loads(sys.argv[1]))
    rd = RunDir.create(Path(sys.argv[2]) / "runs", "w")
    counts = run_ingest(cfg, rd)
    print(json.dumps({"counts": counts, "run": str(rd.path)}), flush=True)
