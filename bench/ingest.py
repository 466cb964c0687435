"""Ingest throughput on synthetic production-like logs (redaction and MinHash on).

    python bench/ingest.py [--n 100000] [--parquet]

Generates N chat records (a few long shared system prompts, varied user turns, ~5 % carrying
PII, ~3 % exact and ~2 % near duplicates) into a temp JSONL file, then runs the real ingest
stage on it. Prints progress lines and ends with ONE JSON line of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.rundir import RunDir  # noqa: E402
from ingest.config import IngestConfig  # noqa: E402
from ingest.pipeline import run_ingest  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--parquet", action="store_true", help="also write Parquet (off: the JSONL contract only)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        log = Path(tmp) / "log.jsonl"
        t = time.time()
        generate(log, args.n)
        print(f"generated {args.n} records ({log.stat().st_size / 1e6:.1f} MB) in {time.time() - t:.1f}s", flush=True)
        cfg = IngestConfig.model_validate({"source": {"path": str(log)}, "parquet": args.parquet})
        assert cfg.pii.enabled and cfg.dedup.near_duplicates and cfg.dedup.decontaminate
        rd = RunDir.create(Path(tmp) / "runs", "bench")
        t0, c0 = time.time(), time.process_time()
        counts = run_ingest(cfg, rd)
        wall, cpu = time.time() - t0, time.process_time() - c0
        figures = rd.stage("ingest")["figures"]
    out = {
        "bench": "ingest", "records": args.n, "cpus": os.cpu_count(),
        "records_per_s_processing": figures["records_per_s"],
        "records_per_s_end_to_end": round(args.n / wall, 1),
        # The machine is shared: CPU seconds say what the code costs, wall what it got.
        "records_per_cpu_s": round(args.n / cpu, 1), "cpu_s": round(cpu, 2),
        "wall_s": round(wall, 2), "load_avg_1m": round(os.getloadavg()[0], 2), "parquet": args.parquet,
        "kept": counts["kept"], "duplicates": counts["duplicates"], "near_duplicates": counts["near_duplicates"],
        "decontaminated": counts["decontaminated"], "quarantined": counts["quarantined"],
        "redactions": counts["redactions"], "redactions_by_type": counts["redactions_by_type"],
    }
    print(f"processing {out['records_per_s_processing']:,.0f} records/s, end to end (with writes) "
          f"{out['records_per_s_end_to_end']:,.0f} records/s, {out['records_per_cpu_s']:,.0f} records per CPU second "
          f"(load average {out['load_avg_1m']})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
