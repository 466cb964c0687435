"""`distill` command line: the whole flow, each stage alone, inference, registry and serving.

Environment is set up before Prefect/litellm are imported: Prefect's home lives in the
project-local data directory, and nothing tries the internet (telemetry, price-map fetch, hubs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from core.base import DistillError

OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # The in-process server needs ~7-14 s to start here; 20 s (Prefect's default) is too tight on
    # a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def setup_env(data_dir: str | Path) -> Path:
    data = Path(data_dir).expanduser().resolve()
    data.mkdir(parents=True, exist_ok=True)
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("PREFECT_HOME", str(data / "prefect"))
    return data


def _config(args):
    from distill.config import load_config

    cfg = load_config(args.config, getattr(args, "set", None) or [])
    setup_env(cfg.data_dir)
    return cfg


def _stage_run_dir(args, cfg, create: bool = False):
    from core.rundir import RunDir
    from distill.stages import newest_run_dir

    if getattr(args, "run", None):
        rd = RunDir(args.run)
        if not rd.manifest_path.is_file():
            raise DistillError(f"--run {args.run}: not a run directory (no manifest.json)")
    elif create:
        rd = RunDir.create(cfg.runs_path, cfg.name)
    else:
        rd = newest_run_dir(cfg)
    if rd.manifest().get("config_hash") is None:
        # The record the flow makes at its start. Later verbs on the same run leave it alone, so
        # `--set eval.x=...` on an evaluated run re-evaluates without invalidating its training.
        from distill.config import dump_yaml

        rd.set_config(cfg.hash(), dump_yaml(cfg))
    if getattr(args, "redo", False):
        rd.forget(args.verb.replace("evaluate", "eval"))
    return rd


def _show(rd, result) -> int:
    print(f"run directory: {rd.path}\n{json.dumps(result, indent=2, default=str)}")
    return 0


# -- verbs: each stage verb is one call of its runner in distill/stages.py ---------------------
def cmd_run(args) -> int:
    cfg = _config(args)
    from flows.distill_flow import distill_flow
    from flows.tasks import task_runner

    outcome = distill_flow.with_options(task_runner=task_runner(cfg))(config=str(Path(args.config).resolve()), overrides=args.set or [], force=args.force)
    print(json.dumps(outcome, default=str))
    return 0


def cmd_stage(args) -> int:
    """ingest | select | estimate | replay | filter | train | evaluate | gate on one run directory."""
    from distill import stages

    cfg = _config(args)
    rd = _stage_run_dir(args, cfg, create=args.verb == "ingest")
    if args.verb == "ingest":
        return _show(rd, stages.ingest(cfg, rd))
    if args.verb == "train":
        return _show(rd, stages.train(cfg, rd))
    if args.verb == "select":
        return _show(rd, stages.select(cfg, rd) or {"select": "no select: section in the config, every ingested prompt is replayed"})
    if args.verb == "estimate":
        from teacher.estimate import estimate_markdown

        e = stages.estimate(cfg, rd)
        print(estimate_markdown(e))
        return _show(rd, e)
    if args.verb == "gate":
        from eval.report import summary_markdown

        decision = stages.gate(cfg, rd)
        print(summary_markdown(rd.manifest(), json.loads(rd.eval_report.read_text()), decision))
        return 0 if decision["passed"] else 1
    with stages.teacher_endpoint(cfg):  # the stages that call the teacher
        if args.verb == "replay":
            return _show(rd, stages.replay(cfg, rd))
        if args.verb == "filter":
            return _show(rd, stages.filter_outputs(cfg, rd, force=args.force, warn=lambda m: print(m, file=sys.stderr)))
        from eval.gate import decide
        from eval.report import summary_markdown

        report = stages.evaluate(cfg, rd)
        print(summary_markdown(rd.manifest(), report, decide(cfg.gate, report)))
        return 0


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


def cmd_registry(args) -> int:
    from registry.registry import Registry

    data = setup_env(args.data_dir)
    reg = Registry(args.registry or data / "registry")
    if args.action == "list":
        for name in reg.models():
            aliases = reg.aliases(name)
            for v in reg.versions(name):
                tags = ",".join(a for a, ver in aliases.items() if ver == v)
                meta = reg.meta(name, v)
                cascade = (meta.get("cascade") or {}).get("threshold")
                print(f"{name}\t{v}\t{tags or '-'}\t{meta.get('registered')}\trun={meta.get('run_id')}\tapprover={meta.get('approver')}"
                      + (f"\tcascade_threshold={cascade:.6g}" if cascade is not None else ""))
        return 0
    name = reg.default_name(args.name)
    if args.action == "show":
        version = reg.aliases(name).get(args.version, args.version) if args.version else reg.aliases(name).get("production")
        if not version:
            raise DistillError(f"model {name!r} has no production version; name one")
        meta = reg.meta(name, version)
        print(json.dumps({"meta": meta, "aliases": reg.aliases(name), "path": str(reg.model_dir(name, version)),
                          "cascade_threshold": (meta.get("cascade") or {}).get("threshold")}, indent=2, default=str))
    elif args.action == "promote":
        from registry.promote import promote_version

        if not args.version:
            raise DistillError("distill registry promote: name the version (e.g. v0002) or alias to promote")
        version = reg.aliases(name).get(args.version, args.version)
        print(json.dumps(promote_version(reg, name, version, approver=args.approver, alias=args.alias,
                                         comment=args.comment or "manual promote")))
    elif args.action == "rollback":
        print(json.dumps(reg.rollback(name, approver=args.approver, alias=args.alias)))
    return 0


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


def cmd_approve(args) -> int:
    setup_env(args.data_dir)
    from flows.approval import submit_approval

    submit_approval(args.flow_run_id, approver=args.approver, approved=not args.reject, comment=args.comment or "")
    print(f"{'rejected' if args.reject else 'approved'} flow run {args.flow_run_id} as {args.approver}")
    return 0


def cmd_deploy(args) -> int:
    cfg = _config(args)
    if not os.environ.get("PREFECT_API_URL"):
        raise DistillError("distill deploy needs a running Prefect server: start one (`prefect server start`) and set PREFECT_API_URL (see README)")
    from flows.deploy import deploy

    ids = deploy(args.config, pool=args.pool, cron=args.cron, timezone=args.timezone, train_pool=args.train_pool)
    print(json.dumps({"work_pool": args.pool, "deployments": ids, "config": str(Path(args.config).resolve()), "data_dir": str(cfg.data_path)}, indent=2))
    print(f"start a worker:   prefect worker start --pool {args.pool}\n"
          f"trigger a run:    prefect deployment run 'distill/manual' --param config={Path(args.config).resolve()}")
    if args.train_pool:
        print(f"training worker:  prefect worker start --pool {args.train_pool}   (on the GPU machine; same run storage)")
    return 0


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distill", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)

    def with_config(sp, run_dir=False):
        sp.add_argument("--config", required=True, help="YAML config (see README: configuration reference)")
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
        if run_dir:
            sp.add_argument("--run", help="run directory to work in (default: the newest run of this config's name)")
            sp.add_argument("--redo", action="store_true", help="run the stage again even if the run directory records it as done")
        return sp

    def with_data(sp):
        sp.add_argument("--data-dir", default=os.environ.get("DISTILL_DATA_DIR", ".distill"), help="project data directory (default .distill)")
        sp.add_argument("--registry", help="registry directory or fsspec URL (default <data-dir>/registry)")
        sp.add_argument("--name", help="registered model name (needed only when the registry holds several)")
        return sp

    sp = with_config(sub.add_parser("run", help="run the whole flow: ingest -> ... -> promote"))
    sp.add_argument("--force", action="store_true", help="train even when the data report says there is too little data")
    sp.set_defaults(fn=cmd_run)
    with_config(sub.add_parser("ingest", help="ingest logs into a new run directory"), run_dir=True).set_defaults(fn=cmd_stage)
    with_config(sub.add_parser("select", help="choose which of a run's ingested prompts to replay (the select: section)"), run_dir=True).set_defaults(fn=cmd_stage)
    with_config(sub.add_parser("estimate", help="print the expected replay cost of a run's prompts (spends nothing)"), run_dir=True).set_defaults(fn=cmd_stage)
    with_config(sub.add_parser("replay", help="replay a run's prompts through the teacher"), run_dir=True).set_defaults(fn=cmd_stage)
    sp = with_config(sub.add_parser("filter", help="filter a run's teacher outputs and print the data report"), run_dir=True)
    sp.add_argument("--force", action="store_true", help="do not stop on too little data")
    sp.set_defaults(fn=cmd_stage)
    with_config(sub.add_parser("train", help="train the student of a run"), run_dir=True).set_defaults(fn=cmd_stage)
    with_config(sub.add_parser("evaluate", help="evaluate a run's student against its teacher"), run_dir=True).set_defaults(fn=cmd_stage)
    with_config(sub.add_parser("gate", help="apply the promotion policy to a run's eval report (exit 1 when it fails)"), run_dir=True).set_defaults(fn=cmd_stage)

    sp = with_data(sub.add_parser("predict", help="student inference over a JSONL of {messages}"))
    sp.add_argument("--model", required=True, help="alias (production, candidate), version (v0001), or a path")
    sp.add_argument("--input", required=True, help="JSONL, one {\"messages\": [...]} per line")
    sp.add_argument("--output", required=True, help="JSONL written in input order: {response, latency_ms, confidence}")
    sp.add_argument("--batch-size", type=int, default=32,
                    help="requests predicted together (default 32; latency_ms is then the batch's time; 1 = one at a time)")
    sp.set_defaults(fn=cmd_predict)

    sp = with_data(sub.add_parser("registry", help="list/show/promote/rollback registered students"))
    sp.add_argument("action", choices=["list", "show", "promote", "rollback"])
    sp.add_argument("version", nargs="?", help="version or alias (show, promote)")
    sp.add_argument("--alias", default="production")
    sp.add_argument("--approver", default=os.environ.get("USER", "cli"))
    sp.add_argument("--comment")
    sp.set_defaults(fn=cmd_registry)

    t = sub.add_parser("teacher", help="the embedded reference teacher").add_subparsers(dest="teacher_verb", required=True)
    sp = with_config(t.add_parser("serve", help="serve the reference teacher (offline demos/tests) until Ctrl-C"))
    sp.add_argument("--port", type=int)
    sp.set_defaults(fn=cmd_teacher_serve)

    sp = with_data(sub.add_parser("serve", help="serve a student over an OpenAI-compatible API"))
    sp.add_argument("--model", default="production")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--allow-unauthenticated", action="store_true",
                    help="serve on a non-loopback --host without DISTILL_SERVE_API_KEY (anyone who can reach it may call it)")
    sp.add_argument("--fast-path", choices=["fp32", "int8", "onnx"],
                    help="classifier inference path (default: the one chosen on validation at training, in student.json)")
    sp.add_argument("--engine", choices=["hf", "llamacpp"],
                    help="serving engine: hf (transformers) or llamacpp (causal LMs, llama-cpp-python; default: the one "
                         "student.json records, chosen at training by student.causal_lm.serve_engine)")
    sp.add_argument("--threads", type=int, help="torch threads (default: the cores idle at start)")
    sp.add_argument("--cascade", action="store_true",
                    help="cascade mode: the student answers when confident, uncertain requests are forwarded to the teacher and logged")
    sp.add_argument("--config", help="cascade: the run config (its teacher and cascade sections)")
    sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="cascade: override a config value (repeatable)")
    sp.add_argument("--threshold", type=float, help="cascade: confidence threshold (default: the one the registry version records)")
    sp.add_argument("--forward-log", help="cascade: JSONL the forwarded requests are appended to "
                                          "(default: cascade.forward_log, else <data-dir>/cascade/forwarded.jsonl)")
    sp.set_defaults(fn=cmd_serve)

    sp = with_config(sub.add_parser("deploy", help="register the nightly and manual deployments on the Prefect server at PREFECT_API_URL"))
    sp.add_argument("--pool", default="distill-process", help="process work pool (created if missing)")
    sp.add_argument("--cron", default="0 2 * * *", help="nightly schedule (cron)")
    sp.add_argument("--timezone", default="UTC")
    sp.add_argument("--train-pool", help="also register 'distill-train/gpu' on this work pool (give it GPUs); "
                                         "set orchestration.train_deployment: distill-train/gpu to train there")
    sp.set_defaults(fn=cmd_deploy)

    sp = with_data(sub.add_parser("approve", help="approve or reject a flow run waiting for approval"))
    sp.add_argument("flow_run_id")
    sp.add_argument("--approver", required=True)
    sp.add_argument("--reject", action="store_true")
    sp.add_argument("--comment")
    sp.set_defaults(fn=cmd_approve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except DistillError as e:
        print(f"distill: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
