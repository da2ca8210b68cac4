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

# Property tests (hypothesis) draw the same examples on every run unless PLUG_HYP_PROFILE=explore:
# a CI run fails because of the change it tests, not because a new random draw found an old
# defect. Exploring runs (PLUG_HYP_PROFILE=explore, with PLUG_HYP_EXAMPLES=N where a test reads it)
# draw new examples each time; what they find is fixed and kept as a plain test.
try:
    from hypothesis import settings as _hyp

    _hyp.register_profile("ci", derandomize=True, print_blob=True)
    _hyp.register_profile("explore", derandomize=False, print_blob=True)
    _hyp.load_profile(os.environ.get("PLUG_HYP_PROFILE", "ci"))
except ImportError:  # hypothesis is a dev extra
    pass


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


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model) -> Path:
    """The random hidden-64 Qwen2 as an F16 GGUF, cached beside the model (it never ends a turn
    by itself: greedy decoding runs to the token limit)."""
    from plug_lite.convert import hf_to_gguf
    from plug_lite.toolchain import cache_dir

    path = cache_dir() / "fixtures" / f"judge-{Path(tiny_model).name}-f16.gguf"
    if not path.exists():
        hf_to_gguf(tiny_model, path, outtype="f16")
    return path


#: Chat templates of real base models, vendored with llama.cpp in the llama-cpp-python sdist.
REAL_TEMPLATES = ("Qwen-Qwen2.5-7B-Instruct.jinja", "Qwen-Qwen3-0.6B.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja",
                  "meta-llama-Llama-3.2-3B-Instruct.jinja", "meta-llama-Llama-3.3-70B-Instruct.jinja",
                  "microsoft-Phi-3.5-mini-instruct.jinja", "mistralai-Mistral-Nemo-Instruct-2407.jinja",
                  "google-gemma-2-2b-it.jinja")


@pytest.fixture(scope="session")
def real_templates() -> dict[str, str]:
    """{file name: Jinja text} of :data:`REAL_TEMPLATES`, read from the sdist."""
    import tarfile

    from plug_lite import toolchain

    archive = toolchain.sdist_path(download=False)
    prefix = f"llama_cpp_python-{toolchain.llama_cpp_version()}/vendor/llama.cpp/models/templates/"
    out = {}
    with tarfile.open(archive, "r:gz") as tar:
        for m in tar:
            if m.name.startswith(prefix) and m.name[len(prefix):] in REAL_TEMPLATES:
                out[m.name[len(prefix):]] = tar.extractfile(m).read().decode("utf-8")
    assert set(out) == set(REAL_TEMPLATES), f"{archive}: templates missing: {set(REAL_TEMPLATES) - set(out)}"
    return out


@pytest.fixture(scope="session")
def llama_tools() -> dict:
    """llama.cpp's programs built from the sdist (``make tools``). Skipped when they are not built,
    except under ``make test`` (which sets PLUG_LITE_LLAMA_TOOLS): there a missing program fails."""
    from plug_lite import toolchain

    status = toolchain.tools_status()
    if status["missing"]:
        if os.environ.get(toolchain.TOOLS_ENV):
            pytest.fail(f"{', '.join(status['missing'])} not in ${toolchain.TOOLS_ENV}: {status['hint']}")
        pytest.skip(status["hint"])
    return {k: Path(v) for k, v in status["found"].items()}


@pytest.fixture(scope="session")
def tiny_256_f16(tiny_model_256, tmp_path_factory) -> Path:
    """The hidden-256 tiny model as an F16 GGUF (its ChatML template embedded)."""
    from plug_lite.convert import hf_to_gguf

    return hf_to_gguf(tiny_model_256, tmp_path_factory.mktemp("tiny256") / "tiny256-f16.gguf", outtype="f16")
