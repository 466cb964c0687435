"""Realistic replay records for the filter tests (imported by the tests as `filter_records`)."""
from __future__ import annotations

import itertools

_ids = itertools.count()



def rec(response, *, user="I still haven't received my new card, it's been two weeks.", split="train",
        finish_reason="stop", status="ok", error=None, samples=None, rid=None, completion_tokens=0):
    r = {
        "id": rid or f"r{next(_ids)}",
        "split": split,
        "messages": [{"role": "system", "content": "Classify the banking request. Answer with JSON."},
                     {"role": "user", "content": user}],
        "response": response,
        "finish_reason": finish_reason,
        "prompt_tokens": 30,
        "completion_tokens": completion_tokens,
        "latency_ms": 120.0,
        "cost_usd": 0.0001,
        "ledger_hit": False,
        "status": status,
        "error": error,
    }
    if samples is not None:
        r["samples"] = samples
    return r
