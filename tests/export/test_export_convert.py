"""Export step 2, convert: GGUF files named by convention, with the inference template and the PLUG
metadata, Q8_0 and Q4_K_M made from the F16 file, the quantizer and the metadata writer keeping every
key (plug_lite/export/converting.py, plug_lite/gguf_meta.py, plug_lite/runs.py's gguf_name)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from plug_lite import gguf_meta, runs
from plug_lite.spec import PLUG_KEYS, PlugSpec


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


def test_gguf_name():
    meta = {"base_name": "Gemma-3", "size_label": "270M", "format": "plug", "target": "zh", "base_model": "x"}
    rec = runs.RunRecord.from_dict(meta)
    assert runs.gguf_name(rec, "q8_0") == "Gemma-3-270M-PLUG-zh-Q8_0.gguf"
    assert runs.gguf_name(rec, "F16", kind="adapter") == "Gemma-3-270M-PLUG-zh-LoRA-F16.gguf"
    assert runs.gguf_name(runs.RunRecord.from_dict({**meta, "format": "mono"}), "Q4_K_M") == "Gemma-3-270M-Mono-zh-Q4_K_M.gguf"
    assert runs.gguf_name(rec, "F16", kind="base") == "Gemma-3-270M-F16.gguf"
