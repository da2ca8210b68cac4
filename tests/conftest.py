"""Shared fixtures. Models are built locally (no hub) and cached in ~/.cache/plug_lite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Helpers that are not tests (tests/helpers/) are imported by name, e.g. ``from export_run import ...``.
sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """A random 2-layer Qwen2 (hidden 64) with the real Qwen2 tokenizer and ChatML template."""
    from plug_lite.models import tiny_qwen2

    return tiny_qwen2()


@pytest.fixture(scope="session")
def tiny_model_256() -> Path:
    """Hidden 256: real k-quants without fallbacks."""
    from plug_lite.models import tiny_qwen2

    return tiny_qwen2(hidden=256)
