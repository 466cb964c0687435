"""The student server in its own process: `python -m student.serve_process --model DIR`, and
ChildStudentServer, which starts it and hands back its URL.

A load generator in the server's process shares its interpreter lock: at concurrency 8 the
client's JSON and socket work queues behind the server's, so the eval timed its own client (p95
247 ms, worse than the teacher's). The eval starts the student here, as the teacher is its own
server, so latency and throughput are the server's.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from core.base import DistillError

ROOT = Path(__file__).resolve().parents[1]
_URL = re.compile(r" at (http://\S+/v1)")


class ChildStudentServer:
    """`with ChildStudentServer(model_dir) as url:` -> "http://127.0.0.1:PORT/v1"; the server runs
    in a child process and is terminated on exit. `served` says which path it loaded (fp32/int8/onnx,
    or llamacpp: the engine, student/engine.py; `engine` None = the one student.json records)."""

    def __init__(self, model_path: str | Path, api_key: str | None = None, model_name: str = "student",
                 num_threads: int | None = None, fast_path: str | None = None, startup_timeout_s: float = 600.0,
                 engine: str | None = None):
        self.model_path, self.api_key, self.model_name = Path(model_path), api_key, model_name
        self.num_threads, self.fast_path, self.startup_timeout_s, self.engine = num_threads, fast_path, startup_timeout_s, engine
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.served: str | None = None
        self._stderr: Any = None

    def start(self) -> str:
        if self.url is not None:
            return self.url
        cmd = [sys.executable, "-m", "student.serve_process", "--model", str(self.model_path), "--port", "0",
               "--model-name", self.model_name]
        if self.num_threads:
            cmd += ["--threads", str(self.num_threads)]
        if self.fast_path:
            cmd += ["--fast-path", self.fast_path]
        if self.engine:
            cmd += ["--engine", self.engine]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        env.pop("DISTILL_SERVE_API_KEY", None)
        if self.api_key:
            env["DISTILL_SERVE_API_KEY"] = self.api_key  # not on the command line: ps shows argv to everyone
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, cwd=ROOT)
        line = self._first_line()
        m = _URL.search(line)
        if not m:
            self.stop()
            raise DistillError(f"the student server for {self.model_path} did not start: {line.strip()!r}; stderr: {self._tail()}")
        self.url = m.group(1)
        served = re.search(r"served: (\w+)", line)
        self.served = served.group(1) if served else None
        # Keep draining stdout so a chatty child never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, name="student-child-stdout", daemon=True).start()
        return self.url

    def _first_line(self) -> str:
        out: list[str] = []
        t = threading.Thread(target=lambda: out.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(self.startup_timeout_s)  # readline returns "" if the child exits first
        return out[0] if out else ""

    def _tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read()[-2000:]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._stderr is not None:
            self._stderr.close()
        self.proc = self._stderr = None
        self.url = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m student.serve_process", description="serve a saved student (OpenAI-compatible)")
    p.add_argument("--model", required=True, help="saved student directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--model-name", default="student")
    p.add_argument("--threads", type=int, help="torch threads (default: idle cores)")
    p.add_argument("--fast-path", choices=["fp32", "int8", "onnx", "onnx_int8"], help="override the classifier path recorded in student.json")
    p.add_argument("--engine", choices=["hf", "llamacpp"], help="override the serving engine recorded in student.json")
    args = p.parse_args(argv)
    for k, v in {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
        os.environ.setdefault(k, v)
    from student.serve import serve

    try:
        serve(args.model, args.host, args.port, os.environ.get("DISTILL_SERVE_API_KEY"), model_name=args.model_name,
              num_threads=args.threads, fast_path=args.fast_path, engine=args.engine)
    except DistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
