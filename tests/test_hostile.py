"""Careless and hostile input through the real command line (a subprocess per case): every case
ends with the documented exit status and one line on stderr, never a traceback or a signal, and
leaves the files it must leave."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import plug_gguf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def plug_lite(*args, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run([sys.executable, "-m", "plug_lite", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def refused(r: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The one stderr line of a refused command (exit ``code``, no traceback, no signal)."""
    assert r.returncode == code, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def plug_model(tiny_model) -> dict:
    return plug_gguf.build(tiny_model)


# --------------------------------------------------------------------------------------------
# A --lora file that is not an adapter for the model (llama-cpp-python segfaulted on these).


def _adapter(model_dir: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from plug_lite.convert import lora_to_gguf

    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(str(out / "ad"))
    return lora_to_gguf(out / "ad", model_dir, out / "ad.gguf")


@pytest.fixture(scope="module")
def bad_adapters(plug_model, tiny_model_256, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (adapter file, words the error must contain), all for the hidden-64 PLUG model."""
    from plug_lite.gguf_meta import write_keys

    d = tmp_path_factory.mktemp("adapters")
    other = _adapter(tiny_model_256, d / "256")  # a real adapter, for the hidden-256 model
    own = _adapter(plug_model["hf"], d / "64")  # a real adapter for the PLUG model
    return {
        "another_base": (other, "does not fit"),
        "another_architecture": (write_keys(other, d / "arch.gguf", {"general.architecture": "llama"}),
                                 "architecture 'llama'"),
        # passes every check made before loading, refused by llama.cpp itself (this key must be an array)
        "refused_by_llama_cpp": (write_keys(own, d / "alora.gguf", {"adapter.alora.invocation_tokens": "1"}),
                                 "llama.cpp refused the adapter"),
    }


@pytest.mark.parametrize("verb", ["chat", "generate"])
def test_lora_that_is_a_model_not_an_adapter(plug_model, verb, tmp_path):
    args = ["--prompt", "hi"] if verb == "chat" else ["--eval-set", "sample", "--limit", "1", "--out", tmp_path / "a.jsonl"]
    r = plug_lite(verb, plug_model["plug"], "--lora", plug_model["plain"], *args)
    refused(r, "plain-f16.gguf", "not a LoRA adapter")
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("case", ["another_base", "another_architecture", "refused_by_llama_cpp"])
def test_lora_for_another_model(plug_model, bad_adapters, case):
    # (a sound adapter over its own base passes the same checks: tests/test_chat.py)
    path, words = bad_adapters[case]
    if case == "refused_by_llama_cpp":
        from plug_lite.gguf_meta import check_lora

        assert check_lora(path, plug_model["plug"]) == path  # so the refusal below is llama.cpp's own
    r = plug_lite("chat", plug_model["plug"], "--lora", path, "--prompt", "hi")
    refused(r, path.name, words)


# --------------------------------------------------------------------------------------------
# An output path that is one of the inputs: refused before anything is written.

PARALLEL = [{"id": f"r{i}", "instruction": f"问题{i}", "response": f"回答{i}", "pivot_instruction": f"Question {i}",
             "pivot_response": f"Answer {i}"} for i in range(5)]


@pytest.fixture
def inputs(tmp_path) -> Path:
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in PARALLEL), encoding="utf-8")
    (tmp_path / "link.jsonl").symlink_to(f)
    (tmp_path / "sub").mkdir()
    return f


def _same_input_cases(f: Path, model: str) -> dict[str, tuple[list, str]]:
    d = f.parent
    endpoint = ["--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-not-used", "--model", "m"]
    return {
        "data_out": (["data", "build", "--target", "zh", "--input", f, "--out", f], "--input"),
        "data_out_other_spelling": (["data", "build", "--target", "zh", "--input", f, "--out", d / "sub" / ".." / f.name],
                                    "--input"),
        "data_out_symlink": (["data", "build", "--target", "zh", "--input", f, "--out", d / "link.jsonl"], "--input"),
        "translate_out": (["translate", f, "--target", "ko", "--out", f, "--limit", "3", *endpoint], "INPUT"),
        "translate_cache": (["translate", f, "--target", "ko", "--out", d / "o.jsonl", "--cache", f, *endpoint],
                            "INPUT"),
        "extract_out": (["extract", f, "--target", "zh", "--out", f], "FILE"),
        "generate_out": (["generate", model, "--eval-set", f, "--out", f, "--target", "zh"], "--eval-set"),
    }


@pytest.mark.parametrize("case", ["data_out", "data_out_other_spelling", "data_out_symlink", "translate_out",
                                  "translate_cache", "extract_out", "generate_out"])
def test_output_that_is_an_input_is_refused(inputs, plug_model, case):
    args, names = _same_input_cases(inputs, plug_model["plug"])[case]
    before = inputs.read_bytes()
    r = plug_lite(*args)
    refused(r, "is the input " + names)
    assert inputs.read_bytes() == before
    assert sorted(p.name for p in inputs.parent.iterdir()) == ["in.jsonl", "link.jsonl", "sub"]
