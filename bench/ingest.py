"""Ingest throughput on synthetic production-like logs (redaction and MinHash on).

    python bench/ingest.py [--sizes 100000,1000000,3000000] [--baseline 100000] [--parquet] [--profile]

Generates one log of synthetic chat records (a few long shared system prompts, varied user
turns, ~5 % carrying PII, ~3 % exact and ~2 % near duplicates) and ingests its first N records
for each size, each run in its own process so its peak RSS is its own. The `--baseline` sizes
are also run through today's code (git HEAD's ingest/ and core/) in the same run, and the
counts compared. The 3M run takes several minutes. Ends with ONE JSON line of the figures.
`--profile` runs each ingest under cProfile and adds its time split by stage (compare the
shares: other load on the machine and cProfile's own overhead inflate them all): the main thread of the ingest
process; a stage in the parse worker (ingest/front.py) shows as the main thread's wait for it
unless `--no-worker` runs everything in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("my card payment transfer account refund fee pending declined top up balance app cash atm "
         "exchange rate limit pin blocked verify identity statement charged twice arrived yet still "
         "waiting why how can I do you please help order new virtual physical lost stolen phone "
         "euro dollar pound salary rent direct debit beneficiary cancel change address email").split()


def system_prompt(k: int) -> str:
    labels = ", ".join(f"intent_{k}_{j}" for j in range(77))
    return f"You are router #{k} for a bank's support chat. Pick one intent from: {labels}. Answer JSON only."


def pii(rng: random.Random) -> str:
    return rng.choice([
        f"my email is user{rng.randrange(10**6)}@example.com",
        f"call me on +44 7{rng.randrange(10**8, 10**9)}",
        "card 4111 1111 1111 1111",
        "IBAN GB82 WEST 1234 5698 7654 32",
        f"ssn {rng.randrange(100, 600)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}",
    ])


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    systems = [system_prompt(k) for k in range(4)]
    users: list[tuple[str, int]] = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            r = rng.random()
            if users and r < 0.03:
                user, sysk = rng.choice(users)                # exact duplicate (a retry)
            elif users and r < 0.05:
                user, sysk = rng.choice(users)                # near duplicate
                user += " please"
            else:
                user = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40)))
                if rng.random() < 0.05:
                    user += ", " + pii(rng)
                sysk = rng.randrange(4)
            users.append((user, sysk))
            rec = {"id": f"req_{i:07d}", "timestamp": f"2026-10-{1 + i * 30 // n:02d}T00:00:00Z", "model": "gpt-4o",
                   "messages": [{"role": "system", "content": systems[sysk]}, {"role": "user", "content": user}],
                   "response": {"role": "assistant", "content": json.dumps({"intent": f"intent_{sysk}_{i % 77}"})},
                   "metadata": {"feature": f"router-{sysk}", "channel": rng.choice(["ios", "android", "web"])}}
            f.write(json.dumps(rec) + "\n")


def peak_rss_kb() -> int:
    """This process's own peak RSS. Not ru_maxrss: Linux carries it over fork+exec, so a child
    would report the parent's peak (the generator's) when that is larger."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the parse worker)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def child(args) -> None:
    """One ingest run in this process (its peak RSS is this process's)."""
    if args.impl == "head":  # today's code path, from git, ahead of the working tree
        sys.path.insert(0, args.head_dir)
    from core.rundir import RunDir
    from ingest.config import IngestConfig
    from ingest.pipeline import run_ingest

    data = {"source": {"path": args.log}, "parquet": args.parquet, "max_records": args.n}
    if args.no_worker and args.impl == "new":
        data["store"] = {"parse_worker": False}
    cfg = IngestConfig.model_validate(data)
    assert cfg.pii.enabled and cfg.dedup.near_duplicates and cfg.dedup.decontaminate
    with tempfile.TemporaryDirectory(prefix="ingest-bench-run-") as tmp:
        rd = RunDir.create(Path(tmp) / "runs", "bench")
        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0, c0 = time.time(), _cpu()
        counts = run_ingest(cfg, rd)
        wall, cpu = time.time() - t0, _cpu() - c0
        if prof is not None:
            prof.disable()
        worker_rss = rd.manifest()["stages"]["ingest"]["figures"].get("parse_worker_peak_rss_mb")
    keys = ("read", "kept", "train", "holdout", "duplicates", "near_duplicates", "decontaminated", "quarantined", "redactions")
    print(json.dumps({"impl": args.impl, "records": args.n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "records_per_s_end_to_end": round(args.n / wall, 1), "records_per_cpu_s": round(args.n / cpu, 1),
                      "peak_rss_mb": round(peak_rss_kb() / 1024, 1), "parse_worker_peak_rss_mb": worker_rss,
                      "load_avg_1m": round(os.getloadavg()[0], 2), "counts": {k: counts[k] for k in keys},
                      **({"profile_s": stage_split(prof)} if prof is not None else {})}))


# Stage -> functions whose cumulative time is the stage's (file suffix, function name). Stages
# nest (e.g. the JSON parse inside reading), so they do not add up to the total.
STAGES = {
    "total": [("ingest/pipeline.py", "run_ingest")],
    "read+parse (orjson + canonical record)": [("ingest/sources/jsonl.py", "parse_line")],
    "  json parse (orjson.loads)": [("ingest/sources/jsonl.py", "_fast_loads")],
    "  canonical record": [("ingest/records.py", "from_log_object")],
    "validate": [("ingest/validate.py", "validate")],
    "exact key (sha256)": [("ingest/records.py", "exact_key")],
    "exact/id lookup + insert": [("ingest/store.py", "exact_first"), ("ingest/store.py", "id_position"),
                                 ("ingest/store.py", "add_exact"), ("ingest/store.py", "add_id")],
    "near dedup + split (place)": [("ingest/pipeline.py", "place")],
    "  MinHash": [("ingest/dedup.py", "values_many")],
    "  LSH lookup (best_twins)": [("ingest/store.py", "best_twins")],
    "  LSH insert (add_bands)": [("ingest/store.py", "add_bands")],
    "  MinHash text (dialogue_text)": [("ingest/dedup.py", "dialogue_text")],
    "index writer wait (join)": [("ingest/store.py", "_join")],
    "receive from the parse worker (unpickle)": [("ingest/front.py", "__iter__")],
    "redaction": [("ingest/pii.py", "redact_record")],
    "finish (decontaminate, caps, emit)": [("ingest/finish.py", "finish")],
    "  decontaminate": [("ingest/finish.py", "_decontaminate")],
    "  output write (JsonlOut.write)": [("ingest/output.py", "write")],
    "commit + manifest hashing": [("core/rundir.py", "record_stage")],
}


def stage_split(prof) -> dict:
    import pstats

    st = pstats.Stats(prof).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    out = {}
    for stage, fns in STAGES.items():
        t = sum(v[3] for (f, _, name), v in st.items() if any(f.endswith(sfx) and name == n for sfx, n in fns))
        out[stage] = round(t, 2)
    return out


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))


def run_child(impl: str, log: Path, n: int, parquet: bool, head_dir: str, profile: bool = False,
              no_worker: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", "--impl", impl, "--log", str(log), "--n", str(n), "--head-dir", head_dir]
    cmd += [f for f, on in (("--parquet", parquet), ("--profile", profile), ("--no-worker", no_worker)) if on]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{impl} at {n} failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{impl:>8} {n:>9,}: {r['records_per_s_end_to_end']:>8,.0f} records/s end to end, "
          f"{r['records_per_cpu_s']:>8,.0f} per CPU s, peak RSS {r['peak_rss_mb']:>7,.0f} MB"
          f"{' + worker %.0f MB' % r['parse_worker_peak_rss_mb'] if r.get('parse_worker_peak_rss_mb') else ''}, load {r['load_avg_1m']}, "
          f"kept {r['counts']['kept']:,} dup {r['counts']['duplicates']:,} near {r['counts']['near_duplicates']:,} "
          f"decon {r['counts']['decontaminated']:,}", flush=True)
    for stage, t in r.get("profile_s", {}).items():
        print(f"{'':>19}{stage:<42}{t:>8.2f} s", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000,3000000", help="record counts to ingest (prefixes of one log)")
    ap.add_argument("--baseline", default="100000", help="sizes also run through today's code (git HEAD's ingest/)")
    ap.add_argument("--parquet", action="store_true", help="also write Parquet (off: the JSONL contract only)")
    ap.add_argument("--profile", action="store_true", help="run under cProfile and print the time per stage")
    ap.add_argument("--no-worker", action="store_true", help="new code: parse in the ingest process (store.parse_worker false)")
    ap.add_argument("--log-file", help="keep the generated log here and reuse it when it holds enough records")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="new", help=argparse.SUPPRESS)
    ap.add_argument("--log", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--head-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sizes = sorted(int(x) for x in args.sizes.split(","))
    base = sorted(int(x) for x in args.baseline.split(",") if x)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        log = Path(args.log_file) if args.log_file else Path(tmp) / "log.jsonl"
        n_max = max(sizes + base)
        if log.is_file() and _lines(log) >= n_max:
            print(f"reusing {log} ({log.stat().st_size / 1e6:.0f} MB)", flush=True)
        else:
            t = time.time()
            generate(log, n_max)
            print(f"generated {n_max:,} records ({log.stat().st_size / 1e6:.0f} MB) in {time.time() - t:.0f}s", flush=True)
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        head = Path(tmp) / "head"
        head.mkdir()
        root = Path(__file__).resolve().parents[1]
        arch = subprocess.run(["git", "-C", str(root), "archive", "HEAD", "ingest", "core"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(head)], input=arch, check=True)
        rows = []
        for n in sorted(set(sizes) | set(base)):
            if n in base:
                rows.append(run_child("head", log, n, args.parquet, str(head), args.profile, args.no_worker))
            if n in sizes:
                rows.append(run_child("new", log, n, args.parquet, str(head), args.profile, args.no_worker))
    same = {r["records"]: r["counts"] for r in rows if r["impl"] == "head"}
    for r in rows:
        if r["impl"] == "new" and r["records"] in same:
            match = r["counts"] == same[r["records"]]
            print(f"counts at {r['records']:,}: {'identical to' if match else 'DIFFERENT from'} today's code")
    print(json.dumps({"bench": "ingest", "cpus": os.cpu_count(), "parquet": args.parquet, "runs": rows}))


if __name__ == "__main__":
    main()
