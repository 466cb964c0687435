#!/usr/bin/env bash
# Chromium (Debian's package) and the playwright driver for the browser test; run after
# scripts/install.sh. Idempotent: a second run only checks (about a second).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/bin/chromium ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
fi
# --no-deps like requirements.lock: the pins in requirements-browser.txt are the whole set
# (its one dependency, greenlet, is pinned there).
if ! .venv/bin/python -c "import playwright, importlib.metadata as m; assert m.version('playwright') == '$(sed -n 's/^playwright==//p' requirements-browser.txt)'" 2>/dev/null; then
  .venv/bin/python -m pip install -q --no-deps -r requirements-browser.txt
fi
echo "browser test ready: $(/usr/bin/chromium --version 2>/dev/null), playwright $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("playwright"))')"
