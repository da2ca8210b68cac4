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


# --------------------------------------------------------------------------------------------
# Endpoint replies that are not a chat completion with text: a failed call (counted, not cached,
# not written), the run goes on, and the rerun makes exactly those calls again.

from scripted_openai import ScriptedOpenAI, user_text  # noqa: E402

KEY = "sk-hostile-0123456789"
MALFORMED = {
    "not_json": "<html>502 from a proxy</html>",
    "no_choices": {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []},
    "null_content": {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]},
}


def _good(body: dict) -> str:
    text = user_text(body)
    if "<<<INSTRUCTION>>>" in text:  # translate's protocol
        return "<<<INSTRUCTION>>>\n指令\n<<<RESPONSE>>>\n回答\n<<<END>>>"
    return "Both were read. [[A]]" if "[[A]]" in text or "Assistant A" in text else "答案。"


def _job(verb: str, d: Path, url: str) -> tuple[list, Path]:
    ev = d / "ev.jsonl"
    if not ev.exists():
        ev.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"Say {i}.", "response": f"{i}."}) + "\n"
                              for i in range(3)), encoding="utf-8")
        for side in "ab":
            (d / f"{side}.jsonl").write_text("".join(json.dumps(
                {"id": f"q{i}", "instruction": f"Say {i}.", "answer": f"{side} {i}", "target": "zh"}) + "\n"
                for i in range(3)), encoding="utf-8")
    endpoint = ["--base-url", url, "--api-key", KEY, "--max-retries", "0"]
    if verb == "judge":
        return ["judge", d / "a.jsonl", d / "b.jsonl", "--out", d / "j", "--model", "m", "--bootstrap", "0",
                *endpoint], d / "j" / "judge_cache.jsonl"
    if verb == "translate":
        return ["translate", ev, "--target", "zh", "--out", d / "t.jsonl", "--model", "m", *endpoint], d / "t.cache.jsonl"
    return ["generate", "--eval-set", ev, "--target", "zh", "--out", d / "g.jsonl", "--model-name", "m", *endpoint], \
        d / "g.jsonl"


@pytest.mark.parametrize("kind", list(MALFORMED))
@pytest.mark.parametrize("verb", ["judge", "translate", "generate"])
def test_malformed_replies_are_failed_calls(tmp_path, verb, kind):
    def reply(body):
        return {"body": MALFORMED[kind]} if "Say 1." in user_text(body) else _good(body)

    with ScriptedOpenAI(reply) as srv:
        args, kept = _job(verb, tmp_path, srv.url)
        r = plug_lite(*args)
    assert r.returncode == 3, r.stderr
    assert "Traceback" not in r.stderr and KEY not in r.stderr + r.stdout
    warning = [x for x in r.stderr.splitlines() if x.startswith("warning:")]
    assert len(warning) == 1 and "failed" in warning[0], r.stderr
    kept_lines = kept.read_text(encoding="utf-8").splitlines()
    assert not any("Say 1." in x and "q1" in x for x in kept_lines if verb == "generate")
    failed_calls = 2 if verb == "judge" else 1  # the judge asks both orders
    with ScriptedOpenAI(_good) as srv:
        args, _ = _job(verb, tmp_path, srv.url)
        r = plug_lite(*args)
        assert r.returncode == 0, r.stderr
        assert srv.calls == failed_calls


# --------------------------------------------------------------------------------------------
# The disk fills up (here: a file-size limit, EFBIG) after the free-space checks: one line, exit 2,
# no partial file.


def test_a_write_the_machine_refuses_is_one_line(tmp_path):
    import resource
    import signal

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG

    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, "-m", "plug_lite", "data", "build", "--target", "zh", "--source", "sample",
                        "--out", str(out)], capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
                       preexec_fn=small_files)
    refused(r, "rows.jsonl", "File too large")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_keep_the_users_umask(tmp_path, mask):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, "-m", "plug_lite", "data", "build", "--target", "zh", "--source", "sample",
                        "--out", str(out)], capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
                       preexec_fn=lambda: os.umask(mask))
    assert r.returncode == 0, r.stderr
    for f in (out, tmp_path / "rows.jsonl.summary.json"):
        assert f.stat().st_mode & 0o777 == 0o666 & ~mask, oct(f.stat().st_mode)


def test_credentials_in_a_base_url_are_never_written(tmp_path):
    with ScriptedOpenAI(_good) as srv:
        url = srv.url.replace("http://", "http://user:PASSWORD-1234567@")
        args, _ = _job("judge", tmp_path, url)
        r = plug_lite(*args)
    assert r.returncode == 0, r.stderr
    assert "PASSWORD-1234567" not in r.stdout + r.stderr
    written = [p for p in (tmp_path / "j").rglob("*") if p.is_file()]
    assert written and not any(b"PASSWORD-1234567" in p.read_bytes() for p in written)
    assert "http://***@127.0.0.1" in (tmp_path / "j" / "judge.json").read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Context sizes: nonsense refused before llama.cpp allocates anything; an answer that outgrows a
# small context ends with finish_reason "length".


@pytest.mark.parametrize("ctx,words", [("-5", "at least 1 token"), ("0", "at least 1 token"),
                                       ("1000000000", "was trained for 4096 tokens"),
                                       ("32", "the context holds 32")])
def test_context_sizes_that_cannot_work(plug_model, ctx, words):
    refused(plug_lite("chat", plug_model["plug"], "--prompt", "你好", "--ctx", ctx), words)


def test_an_answer_that_outgrows_the_context_stops_at_its_end(plug_model):
    # llama.cpp rounds a context of 30 up to 256, llama-cpp-python's token buffer holds 30; the
    # 9-token prompt leaves room for 21 tokens of an answer that runs to 28 in a larger context
    r = plug_lite("chat", plug_model["plain"], "--prompt", "你好", "--ctx", "30", "--temperature", "5",
                  "--max-new-tokens", "500", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["stats"]["finish_reason"] == "length"
    assert d["stats"]["prompt_tokens"] + d["stats"]["completion_tokens"] == 30
