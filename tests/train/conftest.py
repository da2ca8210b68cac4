"""Fixtures of the plug_lite.train tests: the rows files (the tiny models come from tests/conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from train_rows import QUESTIONS, plug_row, write_rows  # noqa: E402


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    """The four PLUG rows of QUESTIONS."""
    d = tmp_path_factory.mktemp("rows")
    return write_rows(d / "rows.jsonl", [plug_row(i, *q) for i, q in enumerate(QUESTIONS)])


@pytest.fixture(scope="module")
def eight_rows_file(tmp_path_factory) -> Path:
    """QUESTIONS twice: eight rows (r0..r7), enough to batch and to share between two processes."""
    d = tmp_path_factory.mktemp("rows8")
    return write_rows(d / "rows.jsonl", [plug_row(i, *q) for i, q in enumerate(QUESTIONS * 2)])
