"""Shared building blocks every stage uses: strict config models, errors, hashing, JSONL I/O.

Kept dependency-free (pydantic only) so stage packages can import it without pulling Prefect,
litellm or torch.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class StrictModel(BaseModel):
    """Base for every config section: an unknown key is an error naming that key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def PathField(default: Any = None, description: str = "") -> Any:
    """A config field holding a filesystem path; the loader makes it absolute, relative to the config file."""
    return Field(default, description=description, json_schema_extra={"is_path": True})


def resolve_paths(model: BaseModel, base: Path) -> None:
    """Make every PathField in a config tree absolute (relative to `base`), in place."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("is_path") and isinstance(value, str) and "://" not in value:
            p = Path(value).expanduser()
            setattr(model, name, str(p if p.is_absolute() else (base / p).resolve()))
        elif isinstance(value, BaseModel):
            resolve_paths(value, base)


def kind_union(section: str, default: str, variants: dict[str, type]) -> Any:
    """A config union discriminated on `kind` (missing `kind` = `default`), whose error for an
    unknown kind names the field and the choices: `<section>.kind must be one of a, b, c`."""
    from typing import Annotated, Union

    def _kind(v: Any) -> str:
        return v.get("kind", default) if isinstance(v, dict) else getattr(v, "kind", default)

    members = tuple(Annotated[cls, Tag(tag)] for tag, cls in variants.items())
    return Annotated[Union[members], Discriminator(
        _kind, custom_error_type=f"unknown_{section}_kind",
        custom_error_message=f"{section}.kind must be one of {', '.join(variants)}")]


class DistillError(Exception):
    """A user-facing error: the CLI prints its message (which names the file/field/URL) and exits 2."""


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of canonical JSON; used for record ids, dedup keys, config and input hashes."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:n]


def file_hash(path: str | Path, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def default_cache_dir() -> Path:
    """$DISTILL_CACHE_DIR, else ~/.cache/distill: converted models, fetched registry versions."""
    return Path(os.environ.get("DISTILL_CACHE_DIR") or Path.home() / ".cache" / "distill").expanduser()


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write atomically (temp file + rename) so a killed stage never leaves a half file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def write_json(path: str | Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, ensure_ascii=False, default=str)
            f.write("\n")
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
