"""Writing the ingest outputs: JSONL (the contract) and Hugging Face datasets Parquet."""
from __future__ import annotations

import json
import os
from pathlib import Path


def to_parquet(records: list[dict], path: Path) -> None:
    """Atomic Parquet write. metadata is a JSON string: its keys differ per record and Arrow
    would otherwise infer a struct from the first rows and fail on the rest."""
    import datasets  # imported late: ~1 s
    from datasets import Dataset, Features, Value

    features = Features({
        "id": Value("string"),
        "messages": [{"role": Value("string"), "content": Value("string")}],
        "response": Value("string"),
        "model": Value("string"),
        "timestamp": Value("string"),
        "metadata": Value("string"),
        "split": Value("string"),
    })
    cols: dict[str, list] = {k: [] for k in features}
    for r in records:
        for k in features:
            v = r.get(k)
            cols[k].append(json.dumps(v, ensure_ascii=False) if k == "metadata" else v)
    ds = Dataset.from_dict(cols, features=features)
    tmp = path.with_name(f".{path.name}.tmp")
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one bar per file is noise in the stage log
    try:
        ds.to_parquet(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        if not was_disabled:
            datasets.enable_progress_bars()
