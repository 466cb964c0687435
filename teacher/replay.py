"""Replay stage: send every ingested prompt to the teacher and write replay/responses.jsonl.

    run_replay(cfg: TeacherConfig, rd: RunDir, ledger_path: Path, on_progress=None) -> dict

Online mode runs all prompts on ONE event loop through TeacherClient (ledger -> claim -> queueing
rate limiter -> core.llm.acompletion with retries -> commit), `cfg.concurrency` workers wide.
Batch mode hands the misses to the provider's Batch API (teacher/batch.py). Either way the
ledger makes reruns and restarts after a crash free for what was already answered; the output
has one record per input prompt, in input order, ok or failed with its reason.
"""
from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from core.base import DistillError, read_jsonl, write_jsonl
from core.toolcall_render import render_messages
from core.rundir import RunDir
from teacher.client import TeacherClient, TeacherUnreachable
from teacher.config import TeacherConfig
from teacher.from_config import build_client, ledger_endpoint, ledger_lease_s, open_ledger, teacher_messages
from teacher.ledger import request_key

ProgressHook = Callable[[int, int, float], None]  # on_progress(done, total, spend_usd)


def load_prompts(rd: RunDir) -> list[dict]:
    rows: list[dict] = []
    train = rd.select_train if rd.select_train.is_file() else rd.ingest_train  # the select stage's choice, if it ran
    if not train.is_file():
        raise DistillError(f"replay needs {train} (run the ingest stage first)")
    for path in (train, rd.ingest_holdout):
        if not path.is_file():
            continue
        for i, row in enumerate(read_jsonl(path), 1):
            if not isinstance(row.get("messages"), list) or not row["messages"]:
                raise DistillError(f"{path}: record {i} (id {row.get('id')!r}) has no 'messages' list")
            rows.append(row)
    return rows


class Progress:
    """tqdm bar (rate, ETA, spend) plus the on_progress hook, called at most once a second and at the end."""

    def __init__(self, total: int, enabled: bool, hook: ProgressHook | None):
        from tqdm import tqdm

        self.total, self.done, self.spend, self.failed, self.hook = total, 0, 0.0, 0, hook
        self.bar = tqdm(total=total, unit="prompt", disable=not enabled, file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
        self._last_hook = 0.0

    def update(self, rec: dict) -> None:
        self.done += 1
        self.spend += rec.get("cost_usd") or 0.0
        self.failed += rec.get("status") != "ok"
        self.bar.set_postfix_str(f"spend=${self.spend:.4f} failed={self.failed}", refresh=False)
        self.bar.update(1)
        now = time.monotonic()
        if self.hook and (now - self._last_hook >= 1.0 or self.done == self.total):
            self._last_hook = now
            self.hook(self.done, self.total, self.spend)

    def close(self) -> None:
        self.bar.close()


async def preflight(api_base: str, timeout_s: float) -> None:
    """GET {api_base}/models: any HTTP answer means reachable; a refused/unresolvable/hung endpoint is fatal."""
    import aiohttp

    url = api_base.rstrip("/") + "/models"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=min(10.0, timeout_s))) as s:
            async with s.get(url) as r:
                await r.read()
    except (aiohttp.ClientConnectionError, asyncio.TimeoutError, OSError) as e:
        raise TeacherUnreachable(f"teacher unreachable at {api_base} (GET {url}: {type(e).__name__}: {e})") from None


async def replay_online(cfg: TeacherConfig, rows: list[dict], client: TeacherClient, progress: Progress) -> list[dict]:
    results: list[dict | None] = [None] * len(rows)
    msgs = [teacher_messages(render_messages(r["messages"]), cfg) for r in rows]
    extras = [tool_params(r) for r in rows]
    keys = [request_key(m, client.params(temperature=cfg.temperature, max_tokens=cfg.max_tokens, n=cfg.n, extra=x))
            for m, x in zip(msgs, extras)]
    done = client.ledger.get_done(keys) if client.ledger is not None else {}
    prior = sum(r.get("cost_usd") or 0.0 for r in done.values())  # paid before (ledger hits): counts against max_budget_usd
    unsent = []
    for i, k in enumerate(keys):  # answers already paid for: no claim, no HTTP
        if k in done:
            results[i] = {**done[k], "key": k, "ledger_hit": True, "cost_usd": 0.0}
            progress.update(results[i])
        else:
            unsent.append(i)
    if unsent and cfg.api_base:
        await preflight(cfg.api_base, cfg.timeout_s)
    it = iter(unsent)
    deferred: list[int] = []  # held by another live worker: do everything else first, then wait for them
    budget = cfg.max_budget_usd

    def over_budget(i: int) -> bool:
        """Spend reached teacher.max_budget_usd: no new request (those in flight finish)."""
        if budget is None or progress.spend + prior < budget:
            return False
        results[i] = {"status": "failed", "key": keys[i], "cost_usd": 0.0,
                      "error": f"over_budget: teacher.max_budget_usd ${budget:g} reached; rerun with a higher budget to continue"}
        progress.update(results[i])
        return True

    async def worker() -> None:
        for i in it:  # one shared iterator: each prompt is taken by exactly one worker
            if over_budget(i):
                continue
            rec = await client.complete(msgs[i], temperature=cfg.temperature, max_tokens=cfg.max_tokens, n=cfg.n, extra=extras[i],
                                        wait_if_busy=False)
            if rec is None:
                deferred.append(i)
                continue
            results[i] = rec
            progress.update(rec)
        while deferred:
            i = deferred.pop()
            if over_budget(i):
                continue
            results[i] = await client.complete(msgs[i], temperature=cfg.temperature, max_tokens=cfg.max_tokens, n=cfg.n, extra=extras[i])
            progress.update(results[i])

    tasks = [asyncio.create_task(worker()) for _ in range(min(cfg.concurrency, len(unsent)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:  # one fatal error (unreachable teacher) stops the others; their claims are released
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return results  # type: ignore[return-value]


def tool_params(row: dict) -> dict | None:
    """What the teacher is sent besides the messages: the record's tools and tool_choice as logged
    (canonical tools are OpenAI's wire shape). None without tools, so plain prompts keep their
    ledger keys."""
    extra = {k: row[k] for k in ("tools", "tool_choice") if row.get(k) is not None}
    return extra or None


def to_replay_record(row: dict, rec: dict) -> dict:
    """The contract's replay record (docs/CONTRACTS.md) plus samples, attempts and the ledger key;
    a tool-calling prompt also keeps its "tools" / "tool_choice", and the answer its "tool_calls"."""
    out = {"id": row.get("id"), "split": row.get("split"), "messages": row["messages"], "response": rec.get("response"),
           "finish_reason": rec.get("finish_reason"), "prompt_tokens": rec.get("prompt_tokens", 0),
           "completion_tokens": rec.get("completion_tokens", 0), "latency_ms": rec.get("latency_ms", 0.0),
           "cost_usd": rec.get("cost_usd", 0.0), "ledger_hit": bool(rec.get("ledger_hit")), "status": rec.get("status", "failed"),
           "error": rec.get("error"), "samples": rec.get("samples") or [], "attempts": rec.get("attempts", 0), "ledger_key": rec.get("key")}
    for k in ("tools", "tool_choice"):
        if row.get(k) is not None:
            out[k] = row[k]
    if rec.get("tool_calls"):
        out["tool_calls"] = rec["tool_calls"]
    return out


def summarise(records: list[dict], wall_s: float, client: TeacherClient | None) -> tuple[dict, dict]:
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    by_reason: dict[str, int] = {}
    for r in failed:
        reason = (r.get("error") or "unknown").split(":", 1)[0]
        by_reason[reason] = by_reason.get(reason, 0) + 1
    paid = [r for r in ok if not r["ledger_hit"]]
    lat = sorted(r["latency_ms"] for r in paid)
    counts = {"prompts": len(records), "ok": len(ok), "failed": len(failed), "failed_by_reason": by_reason,
              "ledger_hits": sum(r["ledger_hit"] for r in records), "paid": len(paid)}
    if client is not None:
        counts.update(http_requests=client.http_requests, retries=client.retries, in_doubt_resent=client.in_doubt)
    figures = {
        "cost_usd_total": round(sum(r["cost_usd"] for r in records), 12),
        "priced": client.pricer.priced if client else True,
        "price_source": client.pricer.source if client else None,
        "prompt_tokens_total": sum(r["prompt_tokens"] for r in paid),
        "completion_tokens_total": sum(r["completion_tokens"] for r in paid),
        "wall_s": round(wall_s, 3),
        "requests_per_s": round(len(paid) / wall_s, 2) if wall_s > 0 else None,
        "latency_ms_p50": round(statistics.median(lat), 2) if lat else None,
        "latency_ms_p95": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None,
        "limiter_wait_s": round(client.limiter.waited_s, 3) if client else 0.0,
    }
    return counts, figures


def run_replay(cfg: TeacherConfig, rd: RunDir, ledger_path: Path, on_progress: ProgressHook | None = None) -> dict:
    """Replay every prompt; returns {"counts", "figures"} (also recorded in the run manifest)."""
    started = time.time()
    rows = load_prompts(rd)
    ledger = open_ledger(cfg, ledger_path)
    progress = None
    try:
        client = build_client(cfg, ledger, len(rows), batch=cfg.mode == "batch")  # imports litellm: before the clock starts
        progress = Progress(len(rows), cfg.progress, on_progress)
        t0 = time.monotonic()
        if cfg.mode == "batch":
            from teacher.batch import replay_batch

            if any(tool_params(r) for r in rows):  # it would send them without their tools: answers in text
                raise DistillError("teacher.mode batch does not send tools yet; replay tool-calling prompts with teacher.mode online")

            results = replay_batch(cfg, rd, rows, client, progress)
        else:
            results = asyncio.run(replay_online(cfg, rows, client, progress))
    finally:
        if progress is not None:
            progress.close()
        ledger.close()
    wall = time.monotonic() - t0
    records = [to_replay_record(row, rec) for row, rec in zip(rows, results)]
    out = rd.replay_responses
    write_jsonl(out, records)
    counts, figures = summarise(records, wall, client)
    inputs = [p for p in (rd.ingest_train, rd.ingest_holdout) if p.is_file()]
    warnings = []
    if not client.pricer.priced:
        warnings.append(f"teacher model {cfg.model!r} has no price in litellm's map and no teacher.input/output_cost_per_token: "
                        "cost_usd is reported as 0 (figures.priced = false)")
        print(f"warning: {warnings[-1]}", file=sys.stderr)
    if stopped := counts["failed_by_reason"].get("over_budget"):
        warnings.append(f"teacher.max_budget_usd ${cfg.max_budget_usd:g} reached after ${figures['cost_usd_total']:.4f}: "
                        f"{stopped} of {len(records)} prompts not sent (status failed, error over_budget); raise it and rerun to continue")
        print(f"warning: {warnings[-1]}", file=sys.stderr)
    rd.record_stage("replay", counts=counts, figures=figures, inputs=inputs, outputs=[out], config=cfg, started=started,
                    teacher={"model": cfg.model, "api_base": cfg.api_base, "mode": cfg.mode}, warnings=warnings)
    return {"counts": counts, "figures": figures}


def shard_rows(rows: list[dict], shard: int, n_shards: int) -> list[tuple[int, dict]]:
    """(input position, row) of one shard: by position, so shards are disjoint and cover the input."""
    if not 0 <= shard < n_shards:
        raise DistillError(f"shard {shard} out of range for {n_shards} shards")
    return [(i, r) for i, r in enumerate(rows) if i % n_shards == shard]


def replay_shard(cfg: TeacherConfig, rd: RunDir, ledger_path: Path, shard: int, n_shards: int) -> dict:
    """Replay one shard of the prompts into replay/shards/ (for Prefect task runners or several
    workers). The rate limits are split evenly, and the shared ledger (PostgreSQL via
    teacher.ledger_url across machines) makes sure no two shards or workers pay for one prompt."""
    rows = shard_rows(load_prompts(rd), shard, n_shards)
    share = {k: getattr(cfg, k) / n_shards for k in ("rpm", "tpm", "max_budget_usd") if getattr(cfg, k)}
    scfg = cfg.model_copy(update={**share, "progress": False})
    ledger = open_ledger(cfg, ledger_path)
    try:
        client = build_client(scfg, ledger, len(rows))
        t0 = time.monotonic()
        results = asyncio.run(replay_online(scfg, [r for _, r in rows], client, Progress(len(rows), False, None)))
    finally:
        ledger.close()
    records = [{**to_replay_record(row, rec), "position": i} for (i, row), rec in zip(rows, results)]
    write_jsonl(rd.replay_shards / f"shard-{shard}-of-{n_shards}.jsonl", records)
    counts, figures = summarise(records, time.monotonic() - t0, client)
    return {"shard": shard, **counts, "cost_usd": figures["cost_usd_total"]}


def merge_shards(cfg: TeacherConfig, rd: RunDir, n_shards: int) -> dict:
    """responses.jsonl in input order from the shard files; counts and costs are the shards' own."""
    started = time.time()
    shard_dir = rd.replay_shards
    files = [shard_dir / f"shard-{k}-of-{n_shards}.jsonl" for k in range(n_shards)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DistillError(f"cannot merge replay shards: missing {', '.join(missing)} in {shard_dir}")
    merged = sorted((r for f in files for r in read_jsonl(f)), key=lambda r: r.pop("position"))
    if len(merged) != len(load_prompts(rd)):
        raise DistillError(f"replay shards hold {len(merged)} records for {len(load_prompts(rd))} prompts")
    out = rd.replay_responses
    write_jsonl(out, merged)
    counts, figures = summarise(merged, 0.0, None)
    figures.pop("requests_per_s", None)
    counts["shards"] = n_shards
    inputs = [p for p in (rd.ingest_train, rd.ingest_holdout) if p.is_file()]
    rd.record_stage("replay", counts=counts, figures=figures, inputs=inputs, outputs=[out], config=cfg, started=started,
                    teacher={"model": cfg.model, "api_base": cfg.api_base, "mode": f"online, {n_shards} shards"})
    return {"counts": counts, "figures": figures}


__all__ = ["run_replay", "replay_shard", "merge_shards", "load_prompts", "Progress", "TeacherUnreachable",
           # re-exported from teacher.from_config for existing callers
           "teacher_messages", "build_client", "ledger_endpoint", "ledger_lease_s"]
