"""Fixtures for the filter tests: a run directory holding replay records, a small intent schema."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.base import write_jsonl
from core.rundir import RunDir


@pytest.fixture
def make_rd(tmp_path):
    def _make(records: list[dict]) -> RunDir:
        rd = RunDir.create(tmp_path / "runs", "t")
        write_jsonl(rd.stage_dir("replay") / "responses.jsonl", records)
        return rd
    return _make


@pytest.fixture
def intent_schema(tmp_path) -> Path:
    p = tmp_path / "schema.json"
    p.write_text(json.dumps({
        "type": "object",
        "properties": {"intent": {"type": "string", "enum": ["card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed"]}},
        "required": ["intent"],
        "additionalProperties": False,
    }))
    return p
