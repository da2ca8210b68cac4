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
    # 9-token prompt leaves room for 21 tokens of a greedy answer that runs past 500 in a larger
    # context (greedy: at temperature 5 it sampled its end of turn within 21 tokens in 2 of 12 runs)
    r = plug_lite("chat", plug_model["plain"], "--prompt", "你好", "--ctx", "30", "--temperature", "0",
                  "--max-new-tokens", "500", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["stats"]["finish_reason"] == "length"
    assert d["stats"]["prompt_tokens"] + d["stats"]["completion_tokens"] == 30


# --------------------------------------------------------------------------------------------
# Numbers out of range and output paths of the wrong kind: refused by the command line's one rule
# (plug_lite.cli.CHECKS, Annotated parameters) before anything runs, naming the flag and value.


def _argument_cases(d: Path, model: Path) -> dict[str, tuple[list, tuple[str, ...]]]:
    (d / "folder").mkdir(exist_ok=True)
    (d / "file.json").write_text("{}\n", encoding="utf-8")
    (d / "bad.yaml").write_text("lr: -1\n", encoding="utf-8")
    gen = ["generate", model, "--eval-set", "sample", "--out", d / "a.jsonl"]
    endpoint = ["--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-not-used"]
    judge = ["judge", d / "file.json", d / "file.json", "--out", d / "j", *endpoint]
    translate = ["translate", d / "file.json", "--target", "ko", "--out", d / "t.jsonl", *endpoint]
    return {
        # defect 14: counts, temperatures and timeouts
        "max_new_tokens_0": ([*gen, "--max-new-tokens", "0"], ("--max-new-tokens 0", "at least 1")),
        "max_new_tokens_-1": ([*gen, "--max-new-tokens", "-1"], ("--max-new-tokens -1", "at least 1")),
        "limit_-1": ([*gen, "--limit", "-1"], ("--limit -1", "at least 1")),
        "limit_0": ([*translate, "--limit", "0"], ("--limit 0", "at least 1")),
        "temperature_nan": (["chat", model, "--prompt", "hi", "--temperature", "nan"],
                            ("--temperature nan", "not a finite number")),
        "temperature_-0.5": ([*gen, "--temperature", "-0.5"], ("--temperature -0.5", "at least 0")),
        "timeout_0": ([*judge, "--timeout", "0"], ("--timeout 0.0", "above 0")),
        "parallel_0": ([*translate, "--parallel", "0"], ("--parallel 0", "at least 1")),
        "max_retries_-1": ([*judge, "--max-retries", "-1"], ("--max-retries -1", "at least 0")),
        "price_inf": ([*judge, "--price-in", "inf"], ("--price-in inf", "not a finite number")),
        "threads_0": (["chat", model, "--prompt", "hi", "--threads", "0"], ("--threads 0", "at least 1")),
        "export_prompts_0": (["export", d / "folder", "--prompts", "0"], ("--prompts 0", "at least 1")),
        # defect 18 and its kin: training settings, from flags or a config file
        "train_lr_-1": (["train", "--lr", "-1"], ("--lr -1.0", "above 0")),
        "train_lr_in_config": (["train", "--config", d / "bad.yaml"], ("bad.yaml: lr -1.0", "above 0")),
        "train_epochs_0": (["train", "--epochs", "0"], ("--epochs 0.0", "above 0")),
        "train_lora_r_0": (["train", "--lora-r", "0"], ("--lora-r 0", "at least 1")),
        "train_lora_dropout_1": (["train", "--lora-dropout", "1"], ("--lora-dropout 1.0", "below 1")),
        "train_seed_-1": (["train", "--seed", "-1"], ("--seed -1", "at least 0")),
        "train_max_steps_0": (["train", "--max-steps", "0"], ("--max-steps 0", "-1 or at least 1")),
        # defect 7: output paths of the wrong kind
        "data_out_folder": (["data", "build", "--target", "zh", "--source", "sample", "--out", d / "folder"],
                            ("--out", "folder", "is a folder; this output is a file")),
        "generate_out_folder": ([*gen[:-1], d / "folder"], ("--out", "is a folder; this output is a file")),
        "judge_out_file": ([*judge[:-len(endpoint) - 1], d / "file.json", *endpoint],
                           ("--out", "file.json: is a file; this output is a folder")),
        "report_out_file": (["report", d / "file.json", "--out", d / "file.json"], ("--out", "is a file")),
        "export_out_dir_file": (["export", d / "folder", "--out-dir", d / "file.json"], ("--out-dir", "is a file")),
        "train_output_dir_file": (["train", "--output-dir", d / "file.json"], ("--output-dir", "is a file")),
        "out_inside_a_file": (["data", "build", "--target", "zh", "--source", "sample", "--out",
                               d / "file.json" / "rows.jsonl"], ("file.json is a file, not a folder",)),
        # defect 15: a missing model is said before anything the model would have told
        "generate_missing_model": (["generate", d / "nope.gguf", "--eval-set", "sample", "--out", d / "a.jsonl"],
                                   ("nope.gguf: not found",)),
    }


ARGUMENT_CASES = [
    "max_new_tokens_0", "max_new_tokens_-1", "limit_-1", "limit_0", "temperature_nan", "temperature_-0.5", "timeout_0",
    "parallel_0", "max_retries_-1", "price_inf", "threads_0", "export_prompts_0", "train_lr_-1", "train_lr_in_config",
    "train_epochs_0", "train_lora_r_0", "train_lora_dropout_1", "train_seed_-1", "train_max_steps_0", "data_out_folder",
    "generate_out_folder", "judge_out_file", "report_out_file", "export_out_dir_file", "train_output_dir_file",
    "out_inside_a_file", "generate_missing_model"]


@pytest.mark.parametrize("case", ARGUMENT_CASES)
def test_arguments_out_of_range_or_of_the_wrong_kind(plug_model, tmp_path, case):
    args, words = _argument_cases(tmp_path, plug_model["plug"])[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    refused(plug_lite(*args), *words)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_every_number_flag_has_a_range():
    """A new count, size, rate or time flag must say what it may be (plug_lite.cli.CHECKS)."""
    import importlib

    from plug_lite import cli
    from plug_lite.train.config import TrainConfig

    params = cli.dataclass_params(TrainConfig)
    for verb, (module, _) in cli.VERBS.items():
        if verb != "train":
            params += cli.flag_params(importlib.import_module(f"plug_lite.{module}").main)
    unchecked = {p.name for p in params if cli.value_type(p.type)[0] in (int, float) and p.check is None}
    assert unchecked == {"options.ctx"}  # the engine checks --ctx against the model's trained context
    outs = {p.name: p.check for p in params if p.name in ("out", "out_dir", "output_dir", "cache")}
    assert all(isinstance(c, cli.PathKind) for c in outs.values()), outs


# --------------------------------------------------------------------------------------------
# Resumes that check what they continue (defect 5): generate adds to an answers file only when it
# would answer as the run that wrote it; --force-resume adds anyway.


@pytest.fixture
def answered(plug_model, tmp_path) -> tuple[Path, list]:
    """One answer of a model at models/model.gguf (a copy of the PLUG model) in answers.jsonl."""
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "model.gguf"
    model.write_bytes(Path(plug_model["plug"]).read_bytes())
    out = tmp_path / "answers.jsonl"
    args = ["generate", model, "--eval-set", "sample", "--target", "zh", "--format", "plug", "--out", out,
            "--max-new-tokens", "24", "--no-progress"]
    r = plug_lite(*args, "--limit", "1")
    assert r.returncode == 0, r.stderr
    return out, args


@pytest.mark.parametrize("change,words", [
    (["--max-new-tokens", "25"], "max_new_tokens=24, this run has 25"),
    (["--temperature", "0.7"], "temperature=0.0, this run has 0.7"),
    (["--system", "Answer briefly."], "system="),
    (["--generator", "other"], "generator='model', this run has 'other'"),
    ("another_model", "model='"),  # another model file at the same path
])
def test_generate_resume_refuses_other_settings(answered, plug_model, change, words):
    out, args = answered
    if change == "another_model":
        Path(args[1]).write_bytes(Path(plug_model["plain"]).read_bytes())
        change = []
    before = out.read_bytes()
    line = refused(plug_lite(*args, *change, "--limit", "2"), str(out), words, "--force-resume")
    assert line.count("=") >= 1 and out.read_bytes() == before
    # the same settings resume; --force-resume adds with the new ones
    r = plug_lite(*args, *change, "--limit", "2", "--force-resume")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and out.read_bytes().startswith(before)


def test_generate_resume_with_the_same_settings_and_a_copied_model(answered, tmp_path):
    out, args = answered
    moved = tmp_path / "elsewhere.gguf"
    moved.write_bytes(Path(args[1]).read_bytes())  # another name and date, the same model
    args = [args[0], moved, *args[2:]]
    r = plug_lite(*args, "--limit", "2", "--generator", "model")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [rows[0]["id"], rows[1]["id"]] and rows[0]["decoding"] == rows[1]["decoding"]


# --------------------------------------------------------------------------------------------
# train --resume continues a checkpoint only with what it was trained with (defect 11).

sys.path.insert(0, str(Path(__file__).parent / "train"))
from train_rows import QUESTIONS, plug_row, write_rows  # noqa: E402


@pytest.fixture(scope="module")
def interrupted_run(tiny_model, tmp_path_factory) -> tuple[Path, list]:
    """A run folder whose training stopped after its checkpoint at step 2 (no plug_run.json)."""
    d = tmp_path_factory.mktemp("train")
    rows = write_rows(d / "rows.jsonl", [plug_row(i, *q) for i, q in enumerate(QUESTIONS)])
    args = ["train", "--model", tiny_model, "--data", rows, "--output-dir", d / "run", "--preset", "cpu-tiny",
            "--max-steps", "2", "--save-steps", "2", "--preview-rows", "0"]
    r = plug_lite(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    (d / "run" / "plug_run.json").unlink()
    assert (d / "run" / "checkpoints" / "checkpoint-2" / "plug_resume.json").is_file()
    return d, [*args, "--resume"]


def _train_change(d: Path, change: str, tiny_model_256: Path) -> list:
    if change == "other_data":  # the same file name, other rows
        other = d / "other" / "rows.jsonl"
        other.parent.mkdir(exist_ok=True)
        write_rows(other, [plug_row(i, *q) for i, q in enumerate(reversed(QUESTIONS))])
        return ["--data", other]
    if change == "other_base":
        return ["--model", tiny_model_256]
    return change.split()


@pytest.mark.parametrize("change,words", [
    ("--lr 0.001", "lr=0.0002, this run has 0.001"),
    ("--lora-r 8", "lora_r=16, this run has 8"),
    ("--lora-alpha 8", "lora_alpha=32, this run has 8"),
    ("--max-length 128", "max_length=256, this run has 128"),
    ("--seed 7", "seed=0, this run has 7"),
    ("other_data", "data="),
    ("other_base", "model="),
])
def test_train_resume_refuses_other_settings(interrupted_run, tiny_model_256, change, words):
    d, args = interrupted_run
    ck = d / "run" / "checkpoints" / "checkpoint-2"
    before = sorted(p.name for p in (d / "run").rglob("*"))
    config = (d / "run" / "config.yaml").read_bytes()
    line = refused(plug_lite(*args, *_train_change(d, change, tiny_model_256), timeout=300), str(ck), words)
    cannot = change.split()[0] in ("--lora-r", "other_base")
    assert ("cannot be continued" in line) == cannot and ("--force-resume" in line) != cannot
    assert sorted(p.name for p in (d / "run").rglob("*")) == before and (d / "run" / "config.yaml").read_bytes() == config
    if cannot:
        line = refused(plug_lite(*args, *_train_change(d, change, tiny_model_256), "--force-resume", timeout=300),
                       words)


def test_train_resume_without_a_record_and_force_resume(interrupted_run, tmp_path):
    d, args = interrupted_run
    copy = tmp_path / "run"
    import shutil

    shutil.copytree(d / "run", copy)
    (copy / "checkpoints" / "checkpoint-2" / "plug_resume.json").unlink()
    args = [*args[:args.index("--output-dir") + 1], copy, *args[args.index("--output-dir") + 2:]]
    refused(plug_lite(*args, timeout=300), "checkpoint-2", "records no settings", "--force-resume")
    r = plug_lite(*args, "--lr", "0.001", "--force-resume", timeout=900)  # continued anyway: the run finishes
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((copy / "plug_run.json").read_text())["metrics"]["steps"] == 2


# --------------------------------------------------------------------------------------------
# Files no reader should choke on (defects 8, 9), through the commands that read them.


def _bad_file(d: Path, kind: str) -> Path:
    f = d / f"{kind}.jsonl"
    good = dict(PARALLEL[0])
    if kind == "lone_surrogate":
        f.write_text(json.dumps(good)[:-1] + ', "note": "\\ud800"}\n', encoding="utf-8")
    elif kind == "deep_nesting":
        f.write_text(json.dumps(good)[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}\n", encoding="utf-8")
    elif kind == "latin1":
        f.write_bytes(json.dumps({"id": "a", "instruction": "café"}, ensure_ascii=False).encode("latin-1") + b"\n")
    elif kind == "binary":
        f.write_bytes(bytes(range(256)) * 4)
    return f


@pytest.mark.parametrize("verb", ["data", "report", "judge"])
@pytest.mark.parametrize("kind", ["lone_surrogate", "deep_nesting", "latin1", "binary"])
def test_files_that_are_not_records(tmp_path, verb, kind):
    f = _bad_file(tmp_path, kind)
    out = tmp_path / "out"
    args = {"data": ["data", "build", "--target", "zh", "--input", f, "--out", out / "rows.jsonl"],
            "report": ["report", f, "--out", out],
            "judge": ["judge", f, f, "--out", out, "--base-url", "http://127.0.0.1:9/v1", "--api-key", "sk-x",
                      "--model", "m"]}[verb]
    refused(plug_lite(*args), f.name)
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# Export on a run whose adapter or record is broken, or whose adapter is another base's (defect 10):
# one line before the merge.


@pytest.fixture(scope="module")
def export_runs(tiny_model, tiny_model_256, tmp_path_factory) -> Path:
    from export_run import make_run

    d = tmp_path_factory.mktemp("export_runs")
    make_run(d / "good", tiny_model)
    make_run(d / "other", tiny_model_256)
    return d


def _break_run(run: Path, other: Path, case: str) -> str:
    """Break ``run`` as ``case`` says; returns the words its refusal must hold."""
    weights = run / "adapter" / "adapter_model.safetensors"
    if case == "empty_adapter":
        weights.write_bytes(b"")
        return "not a safetensors file, or cut short (0 bytes)"
    if case == "truncated_adapter":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        return "cut short"
    if case == "garbage_adapter_config":
        (run / "adapter" / "adapter_config.json").write_bytes(b"\x00\xffnot json")
        return "adapter_config.json"
    if case == "adapter_config_list":
        (run / "adapter" / "adapter_config.json").write_text("[1, 2]")
        return "adapter_config.json: expected a JSON object, got list"
    if case == "run_record_list":
        (run / "plug_run.json").write_text("[1, 2]")
        return "plug_run.json: expected a JSON object, got list"
    if case == "adapter_of_another_base":
        weights.write_bytes((other / "adapter" / "adapter_model.safetensors").read_bytes())
        return "does not fit the base model"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["empty_adapter", "truncated_adapter", "garbage_adapter_config", "adapter_config_list",
                                  "run_record_list", "adapter_of_another_base"])
def test_export_of_a_broken_run(export_runs, tmp_path, case):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(export_runs / "good", run)
    words = _break_run(run, export_runs / "other", case)
    before = sorted(p.name for p in run.rglob("*"))
    refused(plug_lite("export", run, "--out-dir", tmp_path / "gguf", "--quant", "Q8_0", "--no-verify"), words)
    assert sorted(p.name for p in run.rglob("*")) == before and not (tmp_path / "gguf").exists()


def test_export_removes_what_a_killed_export_left_and_keeps_the_umask(export_runs, tmp_path):
    """Defects 17 and 21: the staging folders a killed export left (ours, its process gone) are
    removed by the next export, nothing else is; what the export writes keeps the user's umask."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(export_runs / "good", run)
    out = tmp_path / "gguf"
    out.mkdir()
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    left = {f".export.{dead}.k2j_x9.tmp": False, ".export.ab_c12.tmp": False,  # killed exports' (the 2nd, older naming)
            f".export.{os.getpid()}.live0.tmp": True, ".export-notes": True, f".merged.{dead}.abc.tmp": True}
    for name in left:
        (out / name).mkdir()
        (out / name / "part.gguf").write_bytes(b"\0" * 1000)
        os.utime(out / name, (1_000_000, 1_000_000))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "plug_lite", "export", str(run), "--out-dir", str(out), "--quant", "Q8_0",
                        "--no-verify"], capture_output=True, text=True, timeout=900, env=env, cwd=REPO,
                       preexec_fn=lambda: os.umask(0o027))
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p.name for p in out.iterdir() if p.name.startswith(".")} == {n for n, kept in left.items() if kept}
    ggufs = list(out.glob("*.gguf"))
    assert ggufs and all(p.stat().st_mode & 0o777 == 0o640 for p in ggufs)
    assert (run / "merged").stat().st_mode & 0o777 == 0o750
