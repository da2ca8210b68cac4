"""plug-lite export on a tiny random Qwen2 (hidden 256: real k-quants): merge, F16 GGUF with PLUG
metadata, Q8_0 and Q4_K_M, adapter GGUF, parity report; the NF4-aware QLoRA merge; bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from export_run import exported_chain, make_run
from plug_lite import export, gguf_meta, runs
from plug_lite.io import UserError
from plug_lite.spec import PLUG_KEYS, PlugSpec


@pytest.fixture(scope="session")
def chain(tmp_path_factory, tiny_model_256):
    return exported_chain(tmp_path_factory.getbasetemp() / "export_chain", tiny_model_256)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def test_files_named_by_convention_with_template_and_plug_metadata(chain):
    run, out, report = chain
    names = sorted(p.name for p in out.glob("*.gguf"))
    assert names == sorted([
        "Qwen2-Tiny-40M-PLUG-zh-F16.gguf", "Qwen2-Tiny-40M-PLUG-zh-Q8_0.gguf", "Qwen2-Tiny-40M-PLUG-zh-Q4_K_M.gguf",
        "Qwen2-Tiny-40M-PLUG-zh-LoRA-F16.gguf", "Qwen2-Tiny-40M-F16.gguf"])
    assert not list(out.glob(".*"))  # no temporary files left behind
    template = (run / "tokenizer" / "chat_template.jinja").read_text(encoding="utf-8")
    for q, ftype in (("F16", 1), ("Q8_0", 7), ("Q4_K_M", 15)):
        md = gguf_meta.read_metadata(out / f"Qwen2-Tiny-40M-PLUG-zh-{q}.gguf")
        assert md["general.file_type"] == ftype
        assert md["tokenizer.chat_template"] == template
        assert {k: md[k] for k in PLUG_KEYS} == {"plug.format": "plug", "plug.target": "zh", "plug.pivot": "en", "plug.think": "false"}
    # the sizes are ordered as the types say
    size = {k: v["bytes"] for k, v in report["files"].items()}
    assert size["Q4_K_M"] < size["Q8_0"] < size["F16"]
    # what chat reads: llama_cpp.Llama(...).metadata
    import llama_cpp

    llm = llama_cpp.Llama(str(out / "Qwen2-Tiny-40M-PLUG-zh-Q4_K_M.gguf"), n_ctx=256, verbose=False)
    try:
        assert llm.metadata["plug.target"] == "zh" and llm.metadata["plug.format"] == "plug"
        assert llm.metadata["tokenizer.chat_template"] == template
    finally:
        llm.close()


def test_parity_report(chain):
    run, out, report = chain
    saved = json.loads((run / "export_report.json").read_text())
    assert saved["files"] == report["files"]
    v = report["verify"]
    assert v["checks"]["template"] == v["checks"]["eos"] == v["checks"]["prompt_tokens"] == v["checks"]["stops_at_eos"] == "ok"
    assert v["checks"]["eos_token"] == "<|im_end|>"
    # F16 GGUF greedy text == transformers' merged model
    assert v["greedy"]["F16"]["identical_to_merged"] == v["greedy"]["F16"]["prompts"] == 2
    # adapter GGUF applied on the base GGUF == the merged model
    assert v["greedy"]["adapter_on_base"]["identical_to_merged"] == 2
    # the perturbed LoRA changes greedy text, so "behaves like the base" is measurable
    assert v["fine_tune_visible_on"].startswith("2/2")
    for q in ("Q8_0", "Q4_K_M"):
        assert 0.0 <= v["greedy"][q]["agreement_with_merged"] <= 1.0
        assert "closer_to_base_on" in v["greedy"][q]
    assert report["merge"] == "plain"


def test_quantizer_keeps_plug_keys(chain, tmp_path):
    """llama_model_quantize copies every key of its input: checked on a fresh Q8_0 (export adds
    keys back only when they are missing, so this is the real behaviour)."""
    from plug_lite import convert

    _, out, _ = chain
    dst = convert.quantize(out / "Qwen2-Tiny-40M-PLUG-zh-F16.gguf", tmp_path / "q.gguf", "Q8_0")
    md = gguf_meta.read_metadata(dst)
    assert md["plug.target"] == "zh" and md["plug.think"] == "false" and "im_start" in md["tokenizer.chat_template"]


def _data_digest(path: Path) -> str:
    with open(path, "rb") as f:
        info = gguf_meta._scan(f)
        f.seek(info["data_start"])
        return hashlib.sha256(f.read()).hexdigest()


def test_write_plug_metadata_copies_everything(chain, tmp_path):
    _, out, _ = chain
    src = out / "Qwen2-Tiny-40M-F16.gguf"  # the base file: no PLUG keys yet
    before = gguf_meta.read_metadata(src)
    assert "plug.format" not in before
    dst = gguf_meta.write_plug_metadata(src, tmp_path / "m.gguf", PlugSpec("mono", "ko", None),
                                        chat_template="{{ messages }}")
    after = gguf_meta.read_metadata(dst)
    assert after["plug.format"] == "mono" and after["plug.target"] == "ko" and after["plug.pivot"] == ""
    assert after["tokenizer.chat_template"] == "{{ messages }}"
    same = lambda md: {k: v for k, v in md.items() if not k.startswith("plug.") and k != "tokenizer.chat_template"}  # noqa: E731
    assert same(after) == same(before) and len(after) == len(before) + 4
    assert _data_digest(dst) == _data_digest(src)
    # in place, replacing existing keys
    gguf_meta.write_plug_metadata(dst, dst, PlugSpec("plug", "ko", "en", think=True))
    again = gguf_meta.read_metadata(dst)
    assert again["plug.format"] == "plug" and again["plug.think"] == "true" and again["tokenizer.chat_template"] == "{{ messages }}"
    assert len(again) == len(after)
    import llama_cpp

    llm = llama_cpp.Llama(str(dst), n_ctx=128, verbose=False)
    try:
        assert llm.metadata["plug.target"] == "ko"
        assert llm.tokenize("你好 world".encode(), add_bos=False) == llm.tokenize("你好 world".encode(), add_bos=False)
        assert len(llm.tokenize(b"hello", add_bos=False)) == 1
    finally:
        llm.close()


def test_qlora_merge_into_nf4_rounded_base_is_closer_to_the_4bit_model(tmp_path, tiny_model_256):
    """The adapter of a QLoRA run saw NF4-rounded base weights; merging into the NF4 round trip
    reproduces the 4-bit adapter model's logits far better than merging into the original weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    run = make_run(tmp_path / "run", tiny_model_256, qlora=True)
    meta = runs.load_run(run)
    nf4_dir = export.merge(meta, out_dir=tmp_path / "nf4")
    plain_dir = export.merge(meta, out_dir=tmp_path / "plain", plain=True)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)
    q_model = AutoModelForCausalLM.from_pretrained(str(tiny_model_256), quantization_config=bnb, device_map="cpu", dtype=torch.float32)
    q_model = PeftModel.from_pretrained(q_model, str(run / "adapter"))
    tok = AutoTokenizer.from_pretrained(str(tiny_model_256))
    x = tok(["请用三句话介绍一下长城。 Describe the sea in three sentences."], return_tensors="pt")["input_ids"]
    diffs = {}
    with torch.no_grad():
        ref = q_model(x).logits
        for name, d in (("nf4", nf4_dir), ("plain", plain_dir)):
            logits = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)(x).logits
            diffs[name] = (logits - ref).abs().mean().item()
    # measured: nf4 ~0.0016, plain ~0.048 mean |Δlogit|
    assert diffs["nf4"] < diffs["plain"] / 5, diffs
    assert json.loads((nf4_dir / "plug_merge.json").read_text())["stamp"]["mode"] == "nf4"


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, no file under a final name


def test_run_without_adapter(tmp_path, capsys, tiny_model):
    run = tmp_path / "run"
    run.mkdir()
    (run / "plug_run.json").write_text(json.dumps({"base_model": str(tiny_model), "format": "plug", "target": "zh"}))
    assert export.cli([str(run), "--out-dir", str(tmp_path / "g")]) == 2
    assert "adapter" in _one_error_line(capsys)
    assert not (tmp_path / "g").exists()


def test_base_not_found(chain, tmp_path, capsys):
    run, _, _ = chain
    bad = tmp_path / "run"
    shutil.copytree(run / "adapter", bad / "adapter")
    meta = json.loads((run / "plug_run.json").read_text())
    meta.update(base_model="nobody/no-such-model-xyz", base_model_path=str(tmp_path / "gone"))
    (bad / "plug_run.json").write_text(json.dumps(meta))
    assert export.cli([str(bad), "--out-dir", str(tmp_path / "g")]) == 2
    line = _one_error_line(capsys)
    assert "no-such-model-xyz" in line and "not found" in line


def test_unknown_quant_type(chain, tmp_path, capsys):
    run, _, _ = chain
    assert export.cli([str(run), "--quant", "Q3_XYZ", "--out-dir", str(tmp_path / "g")]) == 2
    assert "Q3_XYZ" in _one_error_line(capsys)
    assert not (tmp_path / "g").exists()


def test_too_little_disk_leaves_no_file(chain, tmp_path, capsys, monkeypatch):
    run, _, _ = chain  # its merge is reused: the first large write is the conversion
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    assert export.cli([str(run), "--out-dir", str(tmp_path / "g"), "--no-verify"]) == 2
    assert "not enough disk space" in _one_error_line(capsys)
    assert not (tmp_path / "g").exists() or list((tmp_path / "g").iterdir()) == []


def test_converter_cannot_be_fetched(chain, tmp_path, capsys, monkeypatch):
    run, _, _ = chain
    monkeypatch.setenv("PLUG_LITE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("PLUG_LITE_SDIST", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: pip finds nothing
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    assert export.cli([str(run), "--out-dir", str(tmp_path / "g")]) == 2
    line = _one_error_line(capsys)
    assert "PLUG_LITE_SDIST" in line and "llama_cpp_python-" in line
    assert not (tmp_path / "g").exists()


def test_failing_parity_check(chain, tmp_path, capsys):
    """A run whose end-of-turn token is not the GGUF's EOS fails the parity check."""
    run, _, _ = chain
    bad = tmp_path / "run"
    for sub in ("adapter", "tokenizer", "merged"):
        shutil.copytree(run / sub, bad / sub)  # copy2 keeps mtimes: the merge is reused
    meta = json.loads((run / "plug_run.json").read_text())
    meta["eos_token"] = "<|endoftext|>"
    (bad / "plug_run.json").write_text(json.dumps(meta))
    assert export.cli([str(bad), "--quant", "F16", "--no-adapter", "--out-dir", str(tmp_path / "g")]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: parity check failed") and "EOS" in line
    assert list((tmp_path / "g").iterdir()) == []  # nothing kept: not even the staging folder
    assert "error" in json.loads((bad / "export_report.json").read_text())["verify"]


def test_gguf_name():
    meta = {"base_name": "Gemma-3", "size_label": "270M", "format": "plug", "target": "zh", "base_model": "x"}
    assert runs.gguf_name(meta, "q8_0") == "Gemma-3-270M-PLUG-zh-Q8_0.gguf"
    assert runs.gguf_name(meta, "F16", kind="adapter") == "Gemma-3-270M-PLUG-zh-LoRA-F16.gguf"
    assert runs.gguf_name({**meta, "format": "mono"}, "Q4_K_M") == "Gemma-3-270M-Mono-zh-Q4_K_M.gguf"
    assert runs.gguf_name(meta, "F16", kind="base") == "Gemma-3-270M-F16.gguf"
