"""The inference verbs of the `distill` command: predict (a file of requests), serve (the student,
or the cascade with --cascade) and teacher-serve (the reference teacher)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from core.base import DistillError
from distill.cli_env import _config, setup_env


def cmd_predict(args) -> int:
    from core.base import write_jsonl
    from registry.registry import Registry
    from student import load_student

    data = setup_env(args.data_dir)
    model_path = Registry(args.registry or data / "registry").resolve(args.model, args.name)
    requests, tools = _read_requests(Path(args.input))
    from student.fast_path import apply

    student = load_student(model_path)
    apply(student, model_path)  # the inference path the servers load (int8 when recorded, student/fast_path.py)
    student.predict([requests[0]])  # warm-up, so the first latency is not a load-time outlier
    scored = hasattr(student, "predict_scored")  # the calibrated confidence of each answer (the cascade's score)
    from student.toolcall_format import answer_row

    tool_kw = (lambda a, b: {"tools": tools[a:b]}) if getattr(student, "accepts_tools", False) else (lambda a, b: {})
    rows = []
    n = max(1, args.batch_size)
    for start in range(0, len(requests), n):
        batch = requests[start:start + n]
        t0 = time.perf_counter()
        kw = tool_kw(start, start + n)  # a student trained with tools reads each line's `tools`
        pairs = student.predict_scored(batch, **kw) if scored else [(t, None) for t in student.predict(batch, **kw)]
        ms = round((time.perf_counter() - t0) * 1000, 3)  # each answer of a batch waited for the whole batch
        rows += [{**answer_row(student, text), "latency_ms": ms, **({"confidence": round(conf, 6)} if conf is not None else {})}
                 for text, conf in pairs]
    write_jsonl(args.output, rows)
    print(f"{len(rows)} responses from {model_path} -> {args.output}", file=sys.stderr)
    return 0


def _read_requests(path: Path) -> tuple[list[list[dict]], list[list[dict] | None]]:
    if not path.is_file():
        raise DistillError(f"--input {path}: file not found")
    out, tools = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                msgs = obj["messages"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DistillError(f"{path}:{i}: expected a JSON object with 'messages' ({type(e).__name__}: {e})") from None
            if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
                raise DistillError(f"{path}:{i}: 'messages' must be a list of {{role, content}} objects")
            out.append(msgs)
            from student.toolcall_format import request_tools

            tools.append(request_tools(obj, f"{path}:{i}"))  # OpenAI `tools` / legacy `functions`, canonical
    if not out:
        raise DistillError(f"--input {path}: no requests in file")
    return out, tools


def cmd_teacher_serve(args) -> int:
    cfg = _config(args)
    from teacher.reference.server import ReferenceTeacher

    ref = cfg.teacher.reference_server
    if args.port is not None:
        ref.port = args.port
    ReferenceTeacher(ref).serve_forever()
    return 0


def cmd_serve(args) -> int:
    from registry.registry import Registry
    from student.serve import serve

    data = setup_env(args.data_dir)
    reg = Registry(args.registry or data / "registry")
    model_path = reg.resolve(args.model, args.name)
    if args.cascade:
        from student.engine import served_engine

        if args.engine and args.engine != served_engine(model_path):  # CascadeServer loads the recorded engine
            raise DistillError(f"--engine {args.engine} with --cascade: the cascade serves the engine {model_path}/student.json "
                               f"records ({served_engine(model_path)}); drop --engine")
        return _serve_cascade(args, data, reg, model_path)
    if args.config or args.threshold is not None or args.forward_log:
        raise DistillError("--config, --threshold and --forward-log are for cascade mode: add --cascade")
    serve(model_path, host=args.host, port=args.port, api_key=os.environ.get("DISTILL_SERVE_API_KEY"),
          allow_unauthenticated=args.allow_unauthenticated, num_threads=args.threads, fast_path=args.fast_path, engine=args.engine)
    return 0


def _serve_cascade(args, data: Path, reg, model_path: Path) -> int:
    """`distill serve --cascade`: the threshold the eval chose on validation (recorded in the
    registry version) unless --threshold; the teacher from --config's teacher section (the
    reference teacher is started when that config enables it, as in the demos)."""
    from distill import stages
    from serving.cascade import serve_cascade
    from teacher.from_config import build_client, teacher_messages

    if not args.config:
        raise DistillError("distill serve --cascade needs --config (the run config: its teacher section says where forwarded requests go)")
    cfg = _config(args)
    threshold = args.threshold
    if threshold is None:
        meta = {}
        if not Path(args.model).expanduser().is_dir():
            name = reg.default_name(args.name)
            version = reg.aliases(name).get(args.model, f"v{int(args.model):04d}" if args.model.isdigit() else args.model)
            meta = reg.meta(name, version)
        threshold = (meta.get("cascade") or {}).get("threshold")
        if threshold is None:
            raise DistillError(f"--model {args.model}: no cascade threshold recorded (the version's eval ran without cascade.enabled, "
                               "its target was unreachable, or --model is a path): pass --threshold")
    forward_log = Path(args.forward_log or cfg.cascade.forward_log or data / "cascade" / "forwarded.jsonl")
    with stages.teacher_endpoint(cfg):
        t = cfg.teacher
        client = build_client(t, None, n_prompts=100_000)  # no ledger: a live request wants a live answer; retry budget per 100k requests
        print(f"forwarded requests are appended to {forward_log}: ingest them with ingest.source: {{kind: jsonl, path: {forward_log}}}",
              flush=True)
        serve_cascade(model_path, float(threshold), client, host=args.host, port=args.port, api_key=os.environ.get("DISTILL_SERVE_API_KEY"),
                      allow_unauthenticated=args.allow_unauthenticated, forward_log=forward_log,
                      teacher_timeout_s=cfg.cascade.teacher_timeout_s, max_tokens=t.max_tokens, temperature=t.temperature,
                      teacher_messages=lambda m: teacher_messages(m, t))
    return 0
