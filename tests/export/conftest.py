"""The export every export test reads: one full export of a tiny random Qwen2 (hidden 256: real
k-quants) with Q8_0, Q4_K_M, the adapter GGUF and the base GGUF, made once per session
(tests/helpers/export_run.py)."""

from __future__ import annotations

import pytest

from export_run import exported_chain


@pytest.fixture(scope="session")
def chain(tmp_path_factory, tiny_model_256):
    return exported_chain(tmp_path_factory.getbasetemp() / "export_chain", tiny_model_256)
