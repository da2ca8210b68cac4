"""Export's importance matrix and drift check (plug_lite/export/converting.py, check_drift.py): the
chain's drift report against an F16 reference, typed in export_report.json; the matrix made from
the run's rows and recorded; without llama.cpp's programs the fallback says what it cannot do and
types that need a matrix are refused before anything is written; --strict-drift fails an export."""

from __future__ import annotations

import json

import pytest

from plug_lite import export, runs, toolchain


def _last_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


def test_drift_report_of_every_quantized_file(chain):
    run, _, report = chain
    d = report["verify"]["drift"]
    assert d["reference"] == "F16" and set(d["files"]) == {"Q8_0", "Q4_K_M"}
    # the 8 rows of the run's data file after the 16 it trained on
    assert d["rows"] == 8 and d["text"].endswith("rows.jsonl rows 16-23 (not trained on)")
    rec = runs.ExportRecord.load(run)
    drift = rec.verify.drift
    q8, q4 = drift.files["Q8_0"], drift.files["Q4_K_M"]
    for f in (q8, q4):
        assert set(f.languages) == {"en", "zh"} and f.languages["zh"].tokens == drift.tokens["target"] > 0
        assert f.languages["en"].tokens == drift.tokens["pivot_instruction"] + drift.tokens["pivot_response"]
    assert {n: f.bytes for n, f in drift.files.items()} == {n: rec.files[n].bytes for n in drift.files}
    assert 0 < q8.kl("zh") < q4.kl("zh") and q8.bits_per_weight > q4.bits_per_weight
    # the recommendation follows the threshold: the smallest file within it
    within = [n for n, f in drift.files.items() if f.kl("zh") <= drift.max_drift]
    want = min(within, key=lambda n: drift.files[n].bytes) if within else "F16"
    assert drift.recommended == want
    assert [w for w in rec.verify.warnings if "--max-drift" in w] == drift.warnings


def test_imatrix_made_from_the_runs_rows_and_recorded(chain, llama_tools):
    run, _, report = chain
    rec = runs.ExportRecord.load(run)
    im = rec.imatrix
    assert im.used and im.file == run / runs.IMATRIX_FILE and im.file.is_file()
    assert im.source.endswith("rows.jsonl rows 0-15 (trained on)") and im.tokens == im.chunks * im.ctx > 0
    from plug_lite import gguf_meta

    md = gguf_meta.read_metadata(rec.files["Q4_K_M"].path)
    assert md["quantize.imatrix.file"].endswith("imatrix.gguf")
    assert "quantize.imatrix.file" not in gguf_meta.read_metadata(rec.files["Q8_0"].path)  # Q8_0 does not use one


def test_without_the_programs(chain, tmp_path, capsys, monkeypatch):
    run, _, _ = chain
    monkeypatch.setenv(toolchain.TOOLS_ENV, str(tmp_path / "no-tools"))
    # a type that needs a matrix: refused before the merge, nothing written
    assert export.cli([str(run), "--quant", "IQ4_XS", "--out-dir", str(tmp_path / "g")]) == 2
    line = _last_error(capsys)
    assert "IQ4_XS" in line and "llama-imatrix" in line and "make tools" in line
    assert not (tmp_path / "g").exists()
    # the others: quantized in-process, and the report says why there is no matrix
    saved = (run / runs.EXPORT_REPORT).read_bytes()
    try:
        export.main(run, out_dir=tmp_path / "g", quants=["Q4_K_M"], adapter=False, verify_parity=False)
        rec = runs.ExportRecord.load(run)
        assert not rec.imatrix.used and "llama-imatrix" in rec.imatrix.note and "make tools" in rec.imatrix.note
        assert "imatrix: not made" in capsys.readouterr().out
    finally:
        (run / runs.EXPORT_REPORT).write_bytes(saved)  # the chain's report, for the other tests


def test_strict_drift_fails_the_export_and_keeps_nothing(chain, tmp_path, capsys):
    run, _, report = chain
    saved = (run / runs.EXPORT_REPORT).read_bytes()
    q4 = report["verify"]["drift"]["files"]["Q4_K_M"]["languages"]["zh"]["kl_mean"]
    try:
        code = export.cli([str(run), "--quant", "Q4_K_M", "--no-adapter", "--max-drift", str(q4 / 2), "--strict-drift",
                           "--imatrix", "none", "--prompts", "1", "--out-dir", str(tmp_path / "g")])
        assert code == 2
        line = _last_error(capsys)
        assert line.startswith("error: drift check failed (no file kept)") and "Q4_K_M" in line and "strict-drift" in line
        assert list((tmp_path / "g").iterdir()) == []
        assert "strict-drift" in json.loads((run / runs.EXPORT_REPORT).read_text())["verify"]["error"]
    finally:
        (run / runs.EXPORT_REPORT).write_bytes(saved)


def test_none_refuses_types_that_need_a_matrix(chain, tmp_path, capsys):
    run, _, _ = chain
    assert export.cli([str(run), "--quant", "Q2_K", "--imatrix", "none", "--out-dir", str(tmp_path / "g")]) == 2
    assert "Q2_K" in _last_error(capsys) and not (tmp_path / "g").exists()


@pytest.mark.parametrize("value", ["sentence", "record"])
def test_imatrix_field_round_trips(value):
    rec = runs.ImatrixRecord(note="not used (--imatrix none)") if value == "sentence" else runs.ImatrixRecord(
        note="made from rows: 512 tokens", file=runs.Path("/r/imatrix.gguf"), source="rows", tokens=512, chunks=1,
        ctx=512, seconds=1.5)
    assert runs.ImatrixRecord.from_value(json.loads(json.dumps(rec.to_value())), "t") == rec
