"""How many torch threads a CPU job should use right now (train, serve, llama.cpp)."""
from __future__ import annotations

import os
import time


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


class ThreadGovernor:
    """Re-picks a server's thread count between requests, from the cores other processes use now.

    auto_threads() samples once, at start; a server lives on. llama.cpp's threads spin at every
    barrier, so a count that was right at start turns costly when the load changes: started on a
    busy machine it keeps 1 thread after the machine frees up (NLU++ student: p50 ~440 vs ~280 ms
    with 2), started idle it keeps 2 when other work arrives (measured 5x slower than 1 at load
    ~3). Other processes' use = the machine's busy CPU time minus this process's own (its own
    spinning threads must not count against it), over the last `every_s` seconds."""

    def __init__(self, current: int, every_s: float = 1.0):
        import psutil

        self.current, self.every_s, self.cores = current, every_s, os.cpu_count() or 1
        self._proc, self._psutil = psutil.Process(), psutil
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        t = self._psutil.cpu_times()
        own = self._proc.cpu_times()
        # Linux counts guest time inside user/nice already; steal stays in: a core the host takes is gone too
        busy = sum(t) - t.idle - sum(getattr(t, k, 0.0) for k in ("iowait", "guest", "guest_nice"))
        return time.monotonic(), busy, own.user + own.system

    @staticmethod
    def other_load(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        """Cores busy with other processes between samples a and b."""
        return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / max(b[0] - a[0], 1e-9)

    def poll(self) -> int | None:
        """The new thread count when it should change, else None (also between samples)."""
        if time.monotonic() - self._last[0] < self.every_s:
            return None  # checked before sampling: this runs on every request
        now = self._sample()
        others = self.other_load(self._last, now)
        self._last = now
        want = max(1, min(self.cores, int(self.cores - others + 0.5)))
        if want == self.current:
            return None
        self.current = want
        return want
