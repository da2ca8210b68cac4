"""plug_lite.train on CPU with the tiny Qwen2: LoRA and 4-bit QLoRA runs, the loss mask checked
against an independent tokenization, the mask errors, resume after an interruption, and one-line
errors with exit code 2. Rows: tests/train/train_rows.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plug_lite import formats, templates
from plug_lite import train as T
from plug_lite.io import UserError
from train_rows import QUESTIONS, REPO, plug_row, write_rows


def cfg(model: Path, data: Path, out: Path, **kw) -> T.TrainConfig:
    base = dict(model=str(model), data=str(data), output_dir=str(out), preset="cpu-tiny", max_steps=2,
                save_steps=2, preview_rows=1)
    base.update(kw)
    return T.TrainConfig(**base)


@pytest.fixture(scope="module")
def lora_run(tiny_model, rows_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    return T.train(cfg(tiny_model, rows_file, out))


def test_lora_run_writes_the_run_folder(lora_run, tiny_model):
    rec = json.loads((lora_run / "plug_run.json").read_text())
    assert rec["backend"] == "cpu" and rec["load_in_4bit"] is False and rec["bnb_4bit"] is None
    assert rec["base_model_path"] == str(Path(tiny_model).resolve())
    assert rec["base_name"] == "Qwen2-Tiny" and rec["size_label"].endswith("M")
    assert (rec["format"], rec["target"], rec["pivot"]) == ("plug", "zh", "en")
    assert rec["eos_token"] == "<|im_end|>" and rec["chat_template_name"] == "chatml"
    assert rec["metrics"]["steps"] == 2 and rec["metrics"]["tokens_per_s"] > 0
    assert rec["metrics"]["peak_memory_mib"] > 0
    assert set(rec["versions"]) >= {"torch", "transformers", "trl", "peft", "bitsandbytes", "unsloth", "plug_lite"}
    assert 0 < rec["data_summary"]["trained_share"] < 1
    assert (lora_run / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((lora_run / "adapter" / "adapter_config.json").read_text())["r"] == 16
    lines = [json.loads(x) for x in (lora_run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(x["loss"] > 0 and x["peak_memory_mib"] > 0 for x in lines)
    # the saved tokenizer carries the inference template, never a training-only one
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(lora_run / "tokenizer"))
    assert templates.name_of(tok.chat_template) == "chatml"
    assert not re.search(r"\{%-?\s*generation", tok.chat_template)
    # config.yaml round-trips into the same TrainConfig
    back = T.load_config(lora_run / "config.yaml")
    assert back == T.TrainConfig(**rec["config"])


def test_labels_are_exactly_the_completion_and_eos(tiny_model, rows_file, tmp_path):
    """Independent of TRL: the prompt rendered with a generation prompt is a prefix of the whole
    conversation; every token after it is trained, none before."""
    from transformers import AutoTokenizer

    prep = T.prepare(cfg(tiny_model, rows_file, tmp_path / "run"))
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    eos_id = tok.convert_tokens_to_ids("<|im_end|>")
    rows = {r["id"]: r for r in map(json.loads, rows_file.read_text().splitlines())}
    ds = prep.trainer.train_dataset
    assert len(ds) == len(rows)
    for ex in ds:
        r = rows[ex["id"]]
        p_ids = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
        full = tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False)
        assert full[: len(p_ids)] == p_ids
        assert ex["input_ids"] == full
        assert ex["labels"] == [-100] * len(p_ids) + full[len(p_ids):]
        trained = [t for t in ex["labels"] if t != -100]
        assert eos_id in trained
        text = tok.decode(trained)
        assert text.strip() == r["completion"][0]["content"] + "<|im_end|>"


def test_qlora_4bit_on_cpu(tiny_model, rows_file, tmp_path):
    run = T.train(cfg(tiny_model, rows_file, tmp_path / "q", backend="cpu-qlora"))
    rec = json.loads((run / "plug_run.json").read_text())
    assert rec["backend"] == "cpu-qlora" and rec["load_in_4bit"] is True
    assert rec["bnb_4bit"] == {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and rec["metrics"]["steps"] == 2


def test_empty_completion_is_refused(tiny_model, tmp_path):
    rows = [plug_row(i, *q) for i, q in enumerate(QUESTIONS[:2])]
    rows[1]["completion"][0]["content"] = ""
    with pytest.raises(UserError, match="row r1: the completion is empty"):
        T.prepare(cfg(tiny_model, write_rows(tmp_path / "r.jsonl", rows), tmp_path / "run"))


def test_template_that_drops_eos_is_refused(tiny_model, rows_file, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    no_eos = (
        "{%- for m in messages -%}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{%- if m['role'] != 'assistant' %}<|im_end|>{% endif %}\n{%- endfor -%}"
        "{%- if add_generation_prompt -%}<|im_start|>assistant\n{%- endif -%}"
    )
    (model / "chat_template.jinja").write_text(no_eos)
    with pytest.raises(UserError, match="end-of-turn token <\\|im_end\\|> is not among the trained tokens"):
        T.prepare(cfg(model, rows_file, tmp_path / "run"))


def _lengths(tiny_model, row):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=False)
    head = formats.render_plug("x", "y", "z", target="zh").split("\n\n")[-1][:-1]  # the target header, via formats
    comp = row["completion"][0]["content"]
    before_target = comp[: comp.index(head)]
    p_ids = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
    return len(full), len(p_ids) + len(tok(before_target)["input_ids"])


def test_max_length_cutting_the_target_is_refused(tiny_model, tmp_path):
    long_pivot = " ".join(["Blue light has a shorter wavelength, so air scatters it more."] * 6)
    row = plug_row(0, QUESTIONS[0][0], QUESTIONS[0][1], long_pivot, QUESTIONS[0][3])
    data = write_rows(tmp_path / "r.jsonl", [row, plug_row(1, *QUESTIONS[1])])
    total, target_start = _lengths(tiny_model, row)
    with pytest.raises(UserError, match="row r0: max_length .* cuts the target-language section"):
        T.prepare(cfg(tiny_model, data, tmp_path / "a", max_length=target_start - 2))
    # cutting only the end (the target section keeps text) is allowed and counted
    prep = T.prepare(cfg(tiny_model, data, tmp_path / "b", max_length=total - 2))
    assert prep.data_summary["truncated_rows"] == 1
    assert max(len(x) for x in prep.trainer.train_dataset["input_ids"]) == total - 2


def test_interrupted_run_resumes(tiny_model, rows_file, tmp_path):
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    c = cfg(tiny_model, rows_file, out, max_steps=4, save_steps=2, preview_rows=0)
    with pytest.raises(KeyboardInterrupt):
        T.train(c, callbacks=[Stop()])
    assert (out / "checkpoints" / "checkpoint-2").is_dir() and not (out / "plug_run.json").exists()
    with pytest.raises(UserError, match="--resume"):
        T.prepare(c)
    run = T.train(T.TrainConfig(**{**c.__dict__, "resume": True}))
    rec = json.loads((run / "plug_run.json").read_text())
    assert rec["metrics"]["steps"] == 4 and (run / "adapter" / "adapter_model.safetensors").is_file()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[:2] == [1, 2] and steps[-2:] == [3, 4] and steps.count(1) == 1  # continued, not restarted
    state = json.loads((run / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4


def _one_line_error(capsys, argv) -> str:
    rc = T.cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_exits_2_with_one_line(tiny_model, rows_file, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "prompt": [{"role": "user", "content": "hi"}]}) + "\n")
    msg = _one_line_error(capsys, ["--model", str(tiny_model), "--data", str(bad), "--output-dir", str(tmp_path / "x")])
    assert "bad.jsonl:1" in msg and "'completion'" in msg
    import torch

    if not torch.cuda.is_available():
        msg = _one_line_error(capsys, ["--model", str(tiny_model), "--data", str(rows_file), "--backend", "qlora",
                                       "--output-dir", str(tmp_path / "y")])
        assert "needs a CUDA GPU" in msg
    # a real process: unknown model path
    p = subprocess.run([sys.executable, "-m", "plug_lite.train", "--model", str(tmp_path / "no-such-model"),
                        "--data", str(rows_file)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "model folder not found" in lines[0], p.stderr


def test_flags_override_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("# comment\nlr: 0.001\nmax_steps: 7\nmodel: some/model\n")
    ns = vars(T.build_parser().parse_args(["--config", str(f), "--max-steps", "3", "--no-think"]))
    c = T.load_config(ns.pop("config"), **ns)
    assert (c.lr, c.max_steps, c.model, c.think) == (0.001, 3, "some/model", False)
    f.write_text("learning_rate: 1\n")
    with pytest.raises(UserError, match="unknown field 'learning_rate'"):
        T.load_config(f)


@pytest.mark.parametrize("name", ["cpu-demo", "t4-qlora"])
def test_shipped_configs_load_and_explain_themselves(name):
    path = REPO / "configs" / f"{name}.yaml"
    head = path.read_text().splitlines()[0]
    assert head.startswith("#")
    c = T.load_config(path)
    resolved, preset = T.resolve(c, cuda_capability=(7, 5))
    assert preset in T.PRESETS and resolved.max_length and resolved.batch_size


def test_both_module_entry_points_give_every_field_as_a_flag(tmp_path):
    """``python -m plug_lite.train`` (the package's __main__) and ``python -m plug_lite train`` print
    the same help, with one flag per TrainConfig field."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    helps = [subprocess.run([sys.executable, "-m", *how, "--help"], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=120) for how in (["plug_lite.train"], ["plug_lite", "train"])]
    assert all(p.returncode == 0 for p in helps), [p.stderr for p in helps]
    assert helps[0].stdout == helps[1].stdout
    for f in dataclasses.fields(T.TrainConfig):
        assert "--" + f.name.replace("_", "-") in helps[0].stdout, f.name
