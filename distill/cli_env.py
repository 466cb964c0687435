"""The CLI's environment and config loading, set up before Prefect/litellm are imported: Prefect's
home lives in the project-local data directory, and nothing tries the internet (telemetry,
price-map fetch, hubs)."""
from __future__ import annotations

import os
from pathlib import Path

OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # The in-process server needs ~7-14 s to start here; 20 s (Prefect's default) is too tight on
    # a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def setup_env(data_dir: str | Path) -> Path:
    data = Path(data_dir).expanduser().resolve()
    data.mkdir(parents=True, exist_ok=True)
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("PREFECT_HOME", str(data / "prefect"))
    return data


def _config(args):
    from distill.config import load_config

    cfg = load_config(args.config, getattr(args, "set", None) or [])
    setup_env(cfg.data_dir)
    return cfg
