"""A local model registry: immutable versions, movable aliases, an append-only audit log.

    <root>/<model_name>/versions/v0001/   model/ (the saved student) + meta.json
    <root>/<model_name>/aliases.json      {"production": "v0001", "candidate": "v0002"}
    <root>/<model_name>/audit.jsonl       one line per register/promote/rollback
    <root>/.lock                          flock: one writer at a time

Writes are atomic: a version is copied into a temp dir and renamed into place, aliases.json is
replaced with os.replace, all under an exclusive file lock, so two promotions at once serialise
instead of corrupting each other. A version that failed half-way never becomes visible.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from distill.base import DistillError, write_json

ALIASES = ("production", "candidate")


class Registry:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- reads -------------------------------------------------------------------------------
    def models(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, name: str) -> list[str]:
        vdir = self.root / name / "versions"
        return sorted(p.name for p in vdir.iterdir() if p.is_dir() and not p.name.startswith(".")) if vdir.is_dir() else []

    def aliases(self, name: str) -> dict[str, str]:
        f = self.root / name / "aliases.json"
        return json.loads(f.read_text()) if f.is_file() else {}

    def meta(self, name: str, version: str) -> dict[str, Any]:
        f = self.root / name / "versions" / version / "meta.json"
        if not f.is_file():
            raise DistillError(f"registry {self.root}: model {name!r} has no version {version!r} (have: {', '.join(self.versions(name)) or 'none'})")
        return json.loads(f.read_text())

    def audit(self, name: str) -> list[dict]:
        f = self.root / name / "audit.jsonl"
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []

    def model_dir(self, name: str, version: str) -> Path:
        self.meta(name, version)
        return self.root / name / "versions" / version / "model"

    def default_name(self, name: str | None = None) -> str:
        if name:
            return name
        models = self.models()
        if len(models) == 1:
            return models[0]
        if not models:
            raise DistillError(f"registry {self.root} is empty: run `distill run` first")
        raise DistillError(f"registry {self.root} holds several models ({', '.join(models)}): name one with --name")

    def resolve(self, spec: str, name: str | None = None) -> Path:
        """An alias ('production'), a version ('v0003' or '3'), or a path to a saved student."""
        p = Path(spec).expanduser()
        if p.is_dir():
            return p
        name = self.default_name(name)
        aliases = self.aliases(name)
        if spec in aliases:
            return self.model_dir(name, aliases[spec])
        if spec in ALIASES:
            raise DistillError(f"registry {self.root}: alias {spec!r} of model {name!r} is not set (aliases: {aliases or 'none'})")
        version = f"v{int(spec):04d}" if spec.isdigit() else spec
        return self.model_dir(name, version)

    # -- writes ------------------------------------------------------------------------------
    def register(self, name: str, model_dir: str | Path, meta: dict[str, Any], alias: str | None = "candidate") -> str:
        """Copy a saved student in as a new immutable version; optionally point `alias` at it."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise DistillError(f"cannot register {model_dir}: not a directory")
        with self._lock():
            vroot = self.root / name / "versions"
            vroot.mkdir(parents=True, exist_ok=True)
            existing = self.versions(name)
            version = f"v{(int(existing[-1][1:]) + 1 if existing else 1):04d}"
            tmp = Path(tempfile.mkdtemp(dir=vroot, prefix=".incoming-"))
            try:
                shutil.copytree(model_dir, tmp / "model")
                write_json(tmp / "meta.json", {**meta, "name": name, "version": version, "registered": _now()})
                os.rename(tmp, vroot / version)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            self._audit(name, {"action": "register", "version": version, "run_id": meta.get("run_id")})
            if alias:
                self._set_alias(name, alias, version, {"action": "alias", "reason": "registered"})
        return version

    def promote(self, name: str, version: str, *, approver: str, alias: str = "production", **audit: Any) -> dict:
        """Move `alias` to `version`, recording who approved it and why."""
        with self._lock():
            self.meta(name, version)
            prev = self.aliases(name).get(alias)
            rec = {"action": "promote", "approver": approver, "previous": prev, **audit}
            self._set_alias(name, alias, version, rec)
            # The approver is part of the version's record too, not only of the audit log.
            meta_path = self.root / name / "versions" / version / "meta.json"
            meta = json.loads(meta_path.read_text())
            meta.setdefault("promotions", []).append({"alias": alias, "approver": approver, "time": _now(), **audit})
            write_json(meta_path, meta)
        return {"name": name, "version": version, "alias": alias, "previous": prev}

    def rollback(self, name: str, *, approver: str, alias: str = "production") -> dict:
        """Point `alias` back at the version it held before the last promotion."""
        with self._lock():
            current = self.aliases(name).get(alias)
            # The promotion that put `current` in place knows what stood there before it, so
            # repeated rollbacks walk back down the chain instead of flipping between two versions.
            promotions = [a for a in self.audit(name) if a.get("alias") == alias and a.get("action") == "promote"]
            prev = next((a.get("previous") for a in reversed(promotions) if a.get("version") == current), None)
            if not prev:
                raise DistillError(f"registry {self.root}: {name!r} {alias}={current} has no earlier promoted version to roll back to")
            self._set_alias(name, alias, prev, {"action": "rollback", "approver": approver, "previous": current})
        return {"name": name, "alias": alias, "version": prev, "previous": current}

    def _set_alias(self, name: str, alias: str, version: str, audit: dict) -> None:
        aliases = self.aliases(name)
        aliases[alias] = version
        write_json(self.root / name / "aliases.json", aliases)
        self._audit(name, {**audit, "alias": alias, "version": version})

    def _audit(self, name: str, rec: dict) -> None:
        with open(self.root / name / "audit.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": _now(), **rec}, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
