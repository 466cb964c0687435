"""`distill` command line: the whole flow, each stage alone, registry, approval and deploy; the
inference verbs (predict, serve) are distill/cli_serve.py, the environment distill/cli_env.py.

Environment is set up before Prefect/litellm are imported: Prefect's home lives in the
project-local data directory, and nothing tries the internet (telemetry, price-map fetch, hubs).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from core.base import DistillError
from distill.cli_env import _config, setup_env
from distill.cli_serve import cmd_predict, cmd_serve, cmd_teacher_serve

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
    sp.add_argument("--fast-path", choices=["fp32", "int8", "onnx", "onnx_int8"],
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
