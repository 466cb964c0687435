"""Eval: student vs teacher on the holdout (parity, latency, cost) and the promotion gate."""
