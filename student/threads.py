"""How many torch threads a CPU job should use right now (train, serve, llama.cpp)."""
from __future__ import annotations

import os


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
