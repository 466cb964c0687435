"""Where a registry's files live: a local directory, or any fsspec URL (s3://, gs://, memory://).

Local: writes are atomic (temp file + os.replace; a version is copied to a temp dir and renamed)
and a flock serialises writers across processes. Object stores have neither rename nor flock:
a version's meta.json is written last and marks it complete (readers ignore a version without
it), aliases.json is one whole-object PUT, and writers serialise on a lease object
(`.lock`: owner token + expiry, taken only when absent or expired, read back to confirm). That
lease is advisory - two writers racing inside the read-back window can both win - so for
concurrent promotions on object storage prefer one promoting worker.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

from core.base import write_json

LEASE_S = 120.0


class Store:
    def __init__(self, root: str | Path):
        import fsspec

        url = str(root)
        self.fs, base = fsspec.core.url_to_fs(url)
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.base = str(Path(base).expanduser().resolve()) if self.local else base.rstrip("/")
        self.url = self.base if self.local else url.rstrip("/")

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    # -- reads
    def read(self, *parts: str) -> str | None:
        p = self.path(*parts)
        return self.fs.cat_file(p).decode("utf-8") if self.fs.isfile(p) else None

    def dirs(self, *parts: str) -> list[str]:
        p = self.path(*parts)
        if not self.fs.isdir(p):
            return []
        return sorted(Path(e["name"]).name for e in self.fs.ls(p, detail=True) if e["type"] == "directory")

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def fetch_dir(self, parts: tuple[str, ...], cache: Path) -> Path:
        """A local copy of a directory (the path itself when local). Callers fetch only immutable
        version directories, so a finished copy in the cache is reused as is."""
        if self.local:
            return Path(self.path(*parts))
        dest = cache / Path(*parts)
        if not (dest / ".complete").is_file():
            tmp = Path(tempfile.mkdtemp(dir=_mkdir(dest.parent), prefix=".fetch-"))
            self.fs.get(self.path(*parts) + "/", str(tmp) + "/", recursive=True)
            (tmp / ".complete").write_text("")
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        return dest

    # -- writes
    def write_json(self, obj, *parts: str) -> None:
        if self.local:
            write_json(self.path(*parts), obj)  # temp file + rename
        else:
            self.fs.pipe_file(self.path(*parts), json.dumps(obj, indent=2, ensure_ascii=False, default=str).encode("utf-8"))

    def append(self, line: str, *parts: str) -> None:
        """Append one line (callers hold the lock)."""
        p = self.path(*parts)
        if self.local:
            with open(p, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        else:
            self.fs.pipe_file(p, ((self.read(*parts) or "") + line + "\n").encode("utf-8"))

    def put_dir(self, contents: dict[str, Path], parts: tuple[str, ...], marker: str, marker_text: str) -> None:
        """Create directory `parts` holding a copy of each local directory in `contents` (by
        name), then `marker`: a reader never sees a half-copied directory with its marker
        (locally the whole directory appears at once, by rename)."""
        dest = self.path(*parts)
        if self.local:
            tmp = Path(tempfile.mkdtemp(dir=_mkdir(Path(dest).parent), prefix=".incoming-"))
            try:
                for name, src in contents.items():
                    shutil.copytree(src, tmp / name)
                (tmp / marker).write_text(marker_text, encoding="utf-8")
                os.rename(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        else:
            for name, src in contents.items():
                self.fs.put(str(src) + "/", f"{dest}/{name}/", recursive=True)
            self.fs.pipe_file(f"{dest}/{marker}", marker_text.encode("utf-8"))

    def discard_incoming(self, *parts: str) -> None:
        """Remove local copies a killed writer left half-done (callers hold the lock, so no live
        writer owns one). On object stores such a copy is a version without its marker: it stays,
        invisible, and keeps its number from being reused."""
        if not self.local:
            return
        d = Path(self.path(*parts))
        for p in d.glob(".incoming-*") if d.is_dir() else ():
            shutil.rmtree(p, ignore_errors=True)

    def put_file(self, src: Path, *parts: str) -> None:
        if self.local:
            shutil.copyfile(src, self.path(*parts))
        else:
            self.fs.put_file(str(src), self.path(*parts))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        if self.local:
            _mkdir(Path(self.base))
            with open(self.path(".lock"), "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            return
        token, p = uuid.uuid4().hex, self.path(".lock")
        deadline = time.monotonic() + 2 * LEASE_S
        while True:
            held = json.loads(self.read(".lock") or "{}")
            if not held or held.get("expires", 0) < time.time():
                self.fs.pipe_file(p, json.dumps({"owner": token, "expires": time.time() + LEASE_S}).encode())
                time.sleep(0.05)  # read back: the last writer of a race wins, the others retry
                if json.loads(self.read(".lock") or "{}").get("owner") == token:
                    break
            if time.monotonic() > deadline:
                from core.base import DistillError

                raise DistillError(f"registry {self.url}: lock held by {held.get('owner')} for over {2 * LEASE_S:.0f}s")
            time.sleep(0.2)
        try:
            yield
        finally:
            if json.loads(self.read(".lock") or "{}").get("owner") == token:
                self.fs.rm_file(p)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p
