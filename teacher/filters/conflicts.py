"""Conflicting and duplicate examples.

Identical inputs with different outputs teach the student that the answer is a coin flip: resolve
them by majority (or drop them all). Identical (input, output) pairs add weight without adding
information, so repeats are dropped and the first kept. Both are grouped within a split so the
holdout is never thinned by the training data.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from teacher.filter_config import ConflictFilterConfig
from teacher.filters.base import KEEP, Filter, Verdict, drop, input_key, record_answer_key


class ConflictFilter(Filter):
    name = "conflicts"

    def __init__(self, config: ConflictFilterConfig):
        super().__init__(config)

    def check_all(self, records: list[dict]) -> list[Verdict]:
        groups: dict[tuple, list[int]] = defaultdict(list)
        keys = [record_answer_key(r) for r in records]
        for i, r in enumerate(records):
            groups[(r.get("split"), input_key(r))].append(i)
        verdicts = [KEEP] * len(records)
        for idx in groups.values():
            counts = Counter(keys[i] for i in idx)
            if len(counts) < 2:
                continue
            n = len(idx)
            if self.config.mode == "drop":
                for i in idx:
                    verdicts[i] = drop("conflict", f"{len(counts)} different outputs for {n} identical inputs")
                continue
            (k1, c1), (_, c2) = counts.most_common(2)
            for i in idx:
                if c1 == c2:
                    verdicts[i] = drop("conflict_tie", f"no majority among {len(counts)} different outputs for {n} identical inputs")
                elif keys[i] != k1:
                    verdicts[i] = drop("conflict_minority", f"output disagrees with the majority ({c1} of {n}) for identical inputs")
        return verdicts


class DedupFilter(Filter):
    name = "dedup"

    def __init__(self, config: ConflictFilterConfig):
        super().__init__(config)

    @property
    def active(self) -> bool:
        return self.config.enabled and self.config.dedup

    def check_all(self, records: list[dict]) -> list[Verdict]:
        first: dict[tuple, str] = {}
        verdicts = []
        for r in records:
            k = (r.get("split"), input_key(r), record_answer_key(r))
            if k in first:
                verdicts.append(drop("duplicate", f"same input and output as {first[k]}"))
            else:
                first[k] = r.get("id")
                verdicts.append(KEEP)
        return verdicts
