"""Selection before replay: uniform, stratified and diversity picks from ingest/train.jsonl."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from core.base import read_jsonl, write_jsonl
from core.rundir import RunDir
from ingest.config import SelectConfig
from ingest.selection import rank, select_prompts, water_fill


def run_with(tmp_path, intents: list[str]) -> RunDir:
    rd = RunDir.create(tmp_path / "runs", "t")
    rows = [{"id": f"r{i}", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": f"{it} question {i}"}],
             "response": None, "model": None, "timestamp": None, "metadata": {"intent": it}, "split": "train"}
            for i, it in enumerate(intents)]
    write_jsonl(rd.ingest_train, rows)
    write_jsonl(rd.ingest_holdout, [{**r, "id": f"h{i}", "split": "holdout"} for i, r in enumerate(rows[:3])])
    return rd


def skewed(n_common=400, rare=("rare_a", "rare_b", "rare_c")) -> list[str]:
    intents = [f"common_{i % 4}" for i in range(n_common)]
    for k, r in enumerate(rare):  # 3 examples each, spread through the log
        for j in range(3):
            intents.insert((k * 3 + j) * 37 + 5, r)
    return intents


def selected(rd: RunDir) -> list[dict]:
    return list(read_jsonl(rd.select_train))


def test_water_fill_takes_small_groups_whole_and_shares_the_rest():
    assert water_fill({"a": 2, "b": 100, "c": 100}, 50) == {"a": 2, "b": 24, "c": 24}
    assert sum(water_fill({"a": 3, "b": 4}, 100).values()) == 7
    assert sum(water_fill({g: 1000 for g in range(7)}, 100).values()) == 100


def test_uniform_is_a_stable_sample_in_log_order(tmp_path):
    rd = run_with(tmp_path, skewed())
    counts = select_prompts(SelectConfig(max_prompts=40), rd)
    got = [r["id"] for r in selected(rd)]
    assert counts == {"candidates": 409, "selected": 40, "not_selected": 369}
    assert got == sorted(got, key=lambda x: int(x[1:]))  # log order
    ids = [r["id"] for r in read_jsonl(rd.ingest_train)]
    assert set(got) == set(sorted(ids, key=rank)[:40])
    assert rd.stage("select")["figures"]["strategy"] == "uniform"


def test_stratified_gives_rare_strata_their_examples(tmp_path):
    rd = run_with(tmp_path, skewed())
    select_prompts(SelectConfig(max_prompts=40, strategy="stratified", field="intent"), rd)
    c = Counter(r["metadata"]["intent"] for r in selected(rd))
    assert c["rare_a"] == c["rare_b"] == c["rare_c"] == 3 and sum(c.values()) == 40
    assert rd.stage("select")["figures"]["strata"] == 7


def test_diversity_covers_rare_clusters_uniform_misses(tmp_path):
    rd = run_with(tmp_path, skewed())
    names = sorted(set(skewed()))

    def embed(texts):  # a stand-in encoder: one direction per intent, a little noise
        rng = np.random.default_rng(0)
        X = np.eye(len(names))[[names.index(t.split()[0]) for t in texts]]
        return X + 0.01 * rng.standard_normal(X.shape)

    select_prompts(SelectConfig(max_prompts=21, strategy="diversity", clusters=7), rd, embed=embed)
    div = Counter(r["metadata"]["intent"] for r in selected(rd))
    assert all(div[r] == 3 for r in ("rare_a", "rare_b", "rare_c")) and sum(div.values()) == 21
    select_prompts(SelectConfig(max_prompts=21), rd)
    uni = Counter(r["metadata"]["intent"] for r in selected(rd))
    assert sum(uni[r] for r in ("rare_a", "rare_b", "rare_c")) < 9
    with pytest.raises(Exception, match="embedding function"):
        select_prompts(SelectConfig(max_prompts=5, strategy="diversity"), rd)


def test_replay_reads_the_selection_and_no_select_section_is_a_no_op(tmp_path):
    from distill import stages
    from distill.config import DistillConfig
    from teacher.replay import load_prompts

    rd = run_with(tmp_path, skewed())
    assert stages.select(DistillConfig(), rd) is None and not rd.select_train.exists()
    assert len(load_prompts(rd)) == 409 + 3
    cfg = DistillConfig.model_validate({"select": {"max_prompts": 10}})
    assert stages.select(cfg, rd)["counts"]["selected"] == 10
    assert [r["split"] for r in load_prompts(rd)] == ["train"] * 10 + ["holdout"] * 3
