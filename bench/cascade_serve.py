"""Cascade serving vs the plain student server: throughput and p50/p95 at concurrency 1 and 32.

A tiny classifier student (built here, seconds) is served twice: by student/serve.py's
StudentServer (the baseline, measured in the same run) and by serving/cascade.py's CascadeServer
whose uncertain requests go to the reference teacher (with `--teacher-ms` latency).
The teacher runs in its own process. The request mix sends `--forward-share` of requests that the student is unsure of. The load
generator runs in a separate process (this file with --loadgen), one keep-alive connection per
worker, so client CPU does not share the server's GIL.

    .venv/bin/python bench/cascade_serve.py [--requests 400] [--teacher-ms 50] [--forward-share 0.2]

Prints one line per (server, concurrency), then one JSON line.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LABELS = {"refund": "i want my money back", "card": "where is my new card", "pin": "my pin is blocked"}
UNSURE = ["tomorrow", "my card", "sunny today", "new money"]


def loadgen(url: str, concurrency: int, texts: list[str]) -> dict:
    """Send every text once over `concurrency` keep-alive connections; latencies in ms."""
    u = urlparse(url)
    lat: list[float] = []
    by: dict[str, list[float]] = {}
    lock, it = threading.Lock(), iter(enumerate(texts))
    errors = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        for i, t in it:
            # a distinct system turn per request: the student reads the user turn only, but the teacher
            # client shares identical in-flight requests, which would flatter the cascade
            body = json.dumps({"model": "m", "messages": [{"role": "system", "content": f"request {i}"}, {"role": "user", "content": t}]})
            t0 = time.perf_counter()
            conn.request("POST", u.path + "/chat/completions", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                lat.append(ms)
                by.setdefault(r.getheader("X-Distill-Answered-By") or "student", []).append(ms)
                errors[0] += r.status != 200
        conn.close()

    t0 = time.perf_counter()
    ths = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    wall = time.perf_counter() - t0
    def q(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(p * len(xs)))], 2)

    return {"requests": len(lat), "errors": errors[0], "rps": round(len(lat) / wall, 1), "p50_ms": q(lat, 0.5), "p95_ms": q(lat, 0.95),
            "by_answerer": {k: {"n": len(v), "p50_ms": q(v, 0.5), "p95_ms": q(v, 0.95)} for k, v in sorted(by.items())}}


def measure(url: str, concurrency: int, texts: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--loadgen", url, str(concurrency)], input=json.dumps(texts),
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_student(tmp: Path) -> tuple[Path, float]:
    import torch

    from student.base import Example
    from student.classifier import ClassifierStudent
    from student.config import ClassifierStudentConfig
    from student.kinds import load_student
    from student.models import make_tiny_encoder

    torch.set_num_threads(1)
    enc = make_tiny_encoder(tmp / "enc", list(LABELS.values()) + ["weather today sunny tomorrow"])
    ex = [Example(f"{k}{i}", [{"role": "user", "content": t}], json.dumps({"intent": k})) for i in range(4) for k, t in LABELS.items()]
    st = ClassifierStudent.create(ClassifierStudentConfig(base_model=str(enc), train_layers=1, lora={"r": 2, "alpha": 4, "dropout": 0.0}), ex)
    st.warm_start(ex)
    st.save(tmp / "model")
    conf = [c for _, c in load_student(tmp / "model").predict_scored([[{"role": "user", "content": t}] for t in list(LABELS.values()) + UNSURE])]
    sure, unsure = conf[: len(LABELS)], conf[len(LABELS):]
    assert max(unsure) < min(sure), "tiny student does not separate the bench's sure and unsure prompts"
    return tmp / "model", (max(unsure) + min(sure)) / 2


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loadgen", nargs=2, metavar=("URL", "CONCURRENCY"), help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--teacher-ms", type=float, default=50.0)
    ap.add_argument("--forward-share", type=float, default=0.2)
    args = ap.parse_args()
    if args.loadgen:
        print(json.dumps(loadgen(args.loadgen[0], int(args.loadgen[1]), json.loads(sys.stdin.read()))))
        return 0

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from core.base import write_jsonl
    from serving.cascade import CascadeServer
    from student.serve import StudentServer
    from teacher.client import TeacherClient

    tmp = Path(tempfile.mkdtemp(prefix="bench-cascade-"))
    model, threshold = build_student(tmp)
    sure, f = list(LABELS.values()), args.forward_share
    # unsure prompts spread evenly through the run: request i is unsure when i * share crosses an integer
    texts = [UNSURE[i % len(UNSURE)] if int((i + 1) * f) > int(i * f) else sure[i % len(sure)] for i in range(args.requests)]
    write_jsonl(tmp / "answers.jsonl", [{"id": f"a{i}", "user": t, "response": json.dumps({"intent": "teacher"})} for i, t in enumerate(sure + UNSURE)])
    # the teacher in its own process too, like a hosted model: it must not share the server's GIL
    teacher = subprocess.Popen([sys.executable, "-m", "teacher.reference.server", "--answers", str(tmp / "answers.jsonl"), "--latency-ms",
                                str(args.teacher_ms), "--stdin-control"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = teacher.stdout.readline()
    if not line.startswith("READY "):
        raise SystemExit(f"reference teacher did not start: {line!r}")
    t_url = line.split()[1]
    results: dict[str, dict] = {}
    try:
        for name in ("student", "cascade"):
            if name == "student":
                srv = StudentServer(model, num_threads=1)
            else:
                client = TeacherClient(model="openai/reference-teacher", api_base=t_url, timeout_s=10, max_retries=2)
                srv = CascadeServer(model, threshold, client, forward_log=tmp / "forwarded.jsonl", num_threads=1)
            url = srv.start()
            try:
                measure(url, 4, texts[:20])  # warm-up
                for c in (1, 32):
                    r = measure(url, c, texts)
                    results[f"{name}_c{c}"] = r
                    split = "  ".join(f"{k} n={v['n']} p50/p95 {v['p50_ms']:.1f}/{v['p95_ms']:.1f}" for k, v in r["by_answerer"].items())
                    print(f"{name:8s} concurrency {c:2d}: {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms  "
                          f"errors {r['errors']}  ({split})", flush=True)
                if name == "cascade":
                    results["cascade_stats"] = srv.router.stats()
            finally:
                srv.stop()
    finally:
        teacher.stdin.close()  # --stdin-control: serves until stdin closes
        teacher.wait(10)
    st = results.get("cascade_stats", {})
    print(json.dumps({"bench": "cascade_serve", "requests": args.requests, "forward_share": args.forward_share, "teacher_ms": args.teacher_ms,
                      "threshold": threshold, **{k: v for k, v in results.items() if k != "cascade_stats"},
                      "forwarded": st.get("forwarded"), "answered_by_student": st.get("answered_by_student"), "fallback": st.get("student_fallback")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
