"""tqdm bars (rate, ETA) on stderr for the eval steps that call models or generate, so no long
step runs silently; the replay and training show the same kind of bar."""
from __future__ import annotations

import sys
from typing import Any


def bar(total: int, desc: str, enabled: bool = True, unit: str = "req") -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr, mininterval=0.5,
                dynamic_ncols=True, leave=True)
