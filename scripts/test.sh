#!/usr/bin/env bash
# The test command the README gives (after scripts/install.sh). Offline; ~10 minutes on 2 cores.
# First the architecture and lint checks (seconds): the import-linter layers contract in
# pyproject.toml and ruff. Then pytest; extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=false LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -q -p no:cacheprovider --timeout 900 "$@"
