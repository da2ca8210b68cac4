"""plug_lite.imatrix: an importance matrix from chat-rendered PLUG rows (llama-imatrix), reused, and
a quant made with it; quant types that need one refused without one."""

from __future__ import annotations

import json
import os

import pytest

from plug_lite import convert, data, gguf_meta, imatrix, toolchain
from plug_lite.io import UserError
from plug_lite.runs import ImatrixRecord, RunRecord
from plug_lite.spec import PlugSpec


def _conversations(n: int) -> list[list[dict]]:
    rows, _ = data.sample_rows(PlugSpec("plug", "zh", "en"))
    return [list(r["prompt"]) + list(r["completion"]) for r in rows[:n]]


def test_calibration_text_is_the_chat_rendered_rows(tiny_256_f16):
    convs = _conversations(3)
    text, tokens = imatrix.calibration_text(convs, tiny_256_f16)
    assert text.count("<|im_start|>assistant\n") == 3 and text.count("<|im_end|>") == 9
    completion = convs[1][-1]["content"]
    assert completion in text and "English response:" in completion and "中文回复：" in completion
    import llama_cpp

    llm = llama_cpp.Llama(str(tiny_256_f16), vocab_only=True, verbose=False)
    try:
        as_text = len(llm.tokenize(text.encode(), add_bos=False, special=False))
    finally:
        llm.close()
    # special tokens are parsed: each turn marker is one token, not a handful of pieces
    assert tokens < as_text


def test_types_that_need_a_matrix_are_refused_without_one(tiny_256_f16, tmp_path):
    for q in ("IQ4_XS", "Q2_K", "Q3_K_S"):
        assert convert.needs_imatrix(q)
        with pytest.raises(UserError, match="needs an importance matrix"):
            convert.quantize(tiny_256_f16, tmp_path / f"{q}.gguf", q)
        assert not (tmp_path / f"{q}.gguf").exists()
    assert not any(convert.needs_imatrix(q) for q in ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "Q3_K_M"))


def test_for_run_modes_without_the_programs(tiny_256_f16, tmp_path, monkeypatch):
    monkeypatch.setenv(toolchain.TOOLS_ENV, str(tmp_path / "no-tools"))
    rec = RunRecord(spec=PlugSpec("plug", "zh", "en"), folder=tmp_path)
    assert imatrix.for_run(rec, tiny_256_f16, "none") == ImatrixRecord(note="not used (--imatrix none)")
    record = imatrix.for_run(rec, tiny_256_f16, "auto")
    assert not record.used and "llama-imatrix" in record.note and "make tools" in record.note
    with pytest.raises(UserError, match="not found"):
        imatrix.for_run(rec, tiny_256_f16, str(tmp_path / "missing.txt"))
    (tmp_path / "calib.txt").write_text("some text")
    with pytest.raises(UserError, match="llama-imatrix"):
        imatrix.for_run(rec, tiny_256_f16, str(tmp_path / "calib.txt"))
    with pytest.raises(UserError, match="llama-quantize"):
        convert.quantize(tiny_256_f16, tmp_path / "x.gguf", "Q4_K_M", imatrix=tmp_path / "calib.txt")


def test_matrix_from_rendered_rows_made_once_and_used_by_the_quantizer(llama_tools, tiny_256_f16, tmp_path):
    import llama_cpp

    convs = _conversations(12)
    text, tokens = imatrix.calibration_text(convs, tiny_256_f16)
    out = tmp_path / "run" / "imatrix.gguf"
    record = imatrix.make(tiny_256_f16, text, out, source="12 sample rows", tokens=tokens, rows=12, ctx=256)
    assert out.is_file() and imatrix.read_record(out) == record
    assert record["tokens"] == tokens and record["chunks"] == tokens // 256 >= 1
    assert record["tokens_used"] == record["chunks"] * 256 <= tokens
    assert not [p for p in out.parent.iterdir() if p.name not in ("imatrix.gguf", "imatrix.json")]  # no temp files
    mtime = os.stat(out).st_mtime_ns
    again = imatrix.make(tiny_256_f16, text, out, source="12 sample rows", tokens=tokens, rows=12, ctx=256)
    assert again == {**record, "reused": True} and os.stat(out).st_mtime_ns == mtime  # reused, not made again
    other = imatrix.make(tiny_256_f16, text[: len(text) // 2], out, source="half", ctx=256)
    assert other["key"] != record["key"] and other["tokens"] < tokens

    q = convert.quantize(tiny_256_f16, tmp_path / "iq4.gguf", "IQ4_XS", imatrix=out)
    md = gguf_meta.read_metadata(q)
    assert md["general.file_type"] == 30  # LLAMA_FTYPE_MOSTLY_IQ4_XS
    assert md["quantize.imatrix.file"] == str(out) and md["quantize.imatrix.entries_count"] > 0
    llm = llama_cpp.Llama(str(q), n_ctx=128, verbose=False)
    try:
        assert llm.create_completion("你好", max_tokens=3, temperature=0.0)["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_for_run_auto_calibrates_on_the_training_rows(llama_tools, tiny_256_f16, tmp_path):
    rows, _ = data.sample_rows(PlugSpec("plug", "zh", "en"))
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:40]) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    rec = RunRecord(spec=PlugSpec("plug", "zh", "en"), folder=run,
                    config={"data": str(tmp_path / "rows.jsonl"), "max_train_samples": 16})
    record = imatrix.for_run(rec, tiny_256_f16, "auto")
    assert record.file == run / "imatrix.gguf" and imatrix.read_record(record.file)["rows"] == 16
    assert "rows 0-15 (trained on)" in record.source and str(record.tokens) in record.note
    assert record.note.startswith("made") and not record.reused and record.tokens == record.chunks * record.ctx
    again = imatrix.for_run(rec, tiny_256_f16, "auto")
    assert again.reused and again.note.startswith("reused") and again.file == record.file
    # the record round-trips through export_report.json's value
    assert ImatrixRecord.from_value(json.loads(json.dumps(record.to_value())), "test") == record
