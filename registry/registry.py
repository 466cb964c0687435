"""A model registry: immutable versions, movable aliases, an append-only audit log.

    <root>/<model_name>/versions/v0001/   model/ (the saved student) + meta.json
    <root>/<model_name>/aliases.json      {"production": "v0001", "candidate": "v0002"}
    <root>/<model_name>/audit.jsonl       one line per register/promote/rollback
    <root>/.lock                          one writer at a time

<root> is a local directory or an fsspec URL (registry.path: s3://bucket/registry); how each
write stays atomic on either is in registry/store.py. Two promotions at once serialise
instead of corrupting each other, and a version that failed half-way never becomes visible.
A writer killed at any point (tests/test_registry.py SIGKILLs one mid-copy, before and after
the rename, and mid-promotion) leaves only complete versions, a whole aliases.json, an audit
line written ahead of every alias change, and no version number handed out twice.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.base import DistillError, default_cache_dir
from registry.store import Store

ALIASES = ("production", "candidate")
META = "meta.json"


class Registry:
    def __init__(self, root: str | Path):
        self.store = Store(root)
        # A Path for a local registry (callers join paths onto it), the URL otherwise.
        self.root: Path | str = Path(self.store.base) if self.store.local else self.store.url

    # -- reads -------------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [m for m in self.store.dirs() if self.store.exists(m, "versions")]

    def versions(self, name: str) -> list[str]:
        # meta.json is written last: a version without it is still being copied in.
        return [v for v in self.store.dirs(name, "versions") if not v.startswith(".") and self.store.exists(name, "versions", v, META)]

    def aliases(self, name: str) -> dict[str, str]:
        text = self.store.read(name, "aliases.json")
        return json.loads(text) if text else {}

    def meta(self, name: str, version: str) -> dict[str, Any]:
        text = self.store.read(name, "versions", version, META)
        if text is None:
            raise DistillError(f"registry {self.root}: model {name!r} has no version {version!r} (have: {', '.join(self.versions(name)) or 'none'})")
        return json.loads(text)

    def audit(self, name: str) -> list[dict]:
        text = self.store.read(name, "audit.jsonl") or ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def version_dir(self, name: str, version: str) -> Path:
        """A local directory holding the version (itself, or a cached download of it)."""
        self.meta(name, version)
        return self.store.fetch_dir((name, "versions", version), default_cache_dir() / "registry" / _slug(self.store.url))

    def model_dir(self, name: str, version: str) -> Path:
        return self.version_dir(name, version) / "model"

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
        with self.store.lock():
            self.store.discard_incoming(name, "versions")  # copies left by a writer killed mid-register
            existing = [v for v in self.store.dirs(name, "versions") if not v.startswith(".")]  # incomplete ones too: never reuse a number
            version = f"v{(max(int(v[1:]) for v in existing) + 1 if existing else 1):04d}"
            record = {**meta, "name": name, "version": version, "registered": _now()}
            self.store.put_dir({"model": model_dir}, (name, "versions", version), META, json.dumps(record, indent=2, default=str))
            self._audit(name, {"action": "register", "version": version, "run_id": meta.get("run_id")})
            if alias:
                self._set_alias(name, alias, version, {"action": "alias", "reason": "registered"})
        return version

    def add_files(self, name: str, version: str, files: list[Path]) -> None:
        """Add generated files (the serving hand-off) beside a version's model."""
        target = self.store.path(name, "versions", version)
        for f in map(Path, files):
            if not (self.store.local and f.resolve().parent == Path(target)):  # written in place already
                self.store.put_file(f, name, "versions", version, f.name)

    def promote(self, name: str, version: str, *, approver: str, alias: str = "production", **audit: Any) -> dict:
        """Move `alias` to `version`, recording who approved it and why."""
        with self.store.lock():
            meta = self.meta(name, version)
            prev = self.aliases(name).get(alias)
            rec = {"action": "promote", "approver": approver, "previous": prev, **audit}
            self._set_alias(name, alias, version, rec)
            # The approver is part of the version's record too, not only of the audit log.
            meta.setdefault("promotions", []).append({"alias": alias, "approver": approver, "time": _now(), **audit})
            self.store.write_json(meta, name, "versions", version, META)
        return {"name": name, "version": version, "alias": alias, "previous": prev}

    def rollback(self, name: str, *, approver: str, alias: str = "production") -> dict:
        """Point `alias` back at the version it held before the last promotion."""
        with self.store.lock():
            current = self.aliases(name).get(alias)
            # The promotion that put `current` in place knows what stood there before it, so
            # repeated rollbacks walk back down the chain instead of flipping between two versions.
            # Promoting the version already in place records itself as previous: skip those, or
            # rollback would "roll back" onto the same version.
            promotions = [a for a in self.audit(name) if a.get("alias") == alias and a.get("action") == "promote"]
            prev = next((a.get("previous") for a in reversed(promotions)
                         if a.get("version") == current and a.get("previous") != current), None)
            if not prev:
                raise DistillError(f"registry {self.root}: {name!r} {alias}={current} has no earlier promoted version to roll back to")
            self._set_alias(name, alias, prev, {"action": "rollback", "approver": approver, "previous": current})
        return {"name": name, "alias": alias, "version": prev, "previous": current}

    def _set_alias(self, name: str, alias: str, version: str, audit: dict) -> None:
        # Audit first (write-ahead): a writer killed in between leaves a logged change that did
        # not land, never an alias that moved with no record of who moved it or from where.
        self._audit(name, {**audit, "alias": alias, "version": version})
        aliases = self.aliases(name)
        aliases[alias] = version
        self.store.write_json(aliases, name, "aliases.json")

    def _audit(self, name: str, rec: dict) -> None:
        self.store.append(json.dumps({"time": _now(), **rec}, default=str), name, "audit.jsonl")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _slug(url: str) -> str:
    from core.base import stable_hash

    return "".join(c if c.isalnum() else "_" for c in url)[-40:] + "-" + stable_hash(url, 8)
