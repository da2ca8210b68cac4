"""The export command (plug_lite/export/staging.py): bad input and a failed check give one line and
exit code 2 and leave no file under a final name; ``python -m plug_lite.export`` is ``plug-lite export``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from plug_lite import export


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return err[-1]


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


@pytest.mark.parametrize("off", [["--no-verify"], ["--drift-rows", "0"]])
def test_strict_drift_without_the_drift_check_is_refused(chain, tmp_path, capsys, off):
    """--strict-drift promises that no file over --max-drift is kept; with the drift check turned
    off the export kept every file (even at --max-drift 0) and said nothing."""
    run, _, _ = chain
    g = tmp_path / "g"
    assert export.cli([str(run), *off, "--strict-drift", "--max-drift", "0", "--quant", "Q8_0", "--out-dir", str(g)]) == 2
    line = _one_error_line(capsys)
    assert "--strict-drift" in line and off[0] in line
    assert not g.exists()


def test_missing_imatrix_file_is_refused_before_the_slow_steps(chain, tmp_path, capsys):
    """--imatrix FILE was looked at only after the merge and the conversion (minutes on a real
    model), and only when a quant type uses one."""
    run, _, _ = chain
    g = tmp_path / "g"
    assert export.cli([str(run), "--imatrix", str(tmp_path / "nope.gguf"), "--quant", "Q4_K_M", "--out-dir", str(g)]) == 2
    err = capsys.readouterr().err
    assert "nope.gguf" in err.splitlines()[-1] and "--imatrix file not found" in err.splitlines()[-1]
    assert "merge:" not in err and "convert:" not in err
    assert not g.exists()  # refused before the staging folder was made


def test_every_file_carries_its_export_id(chain):
    from plug_lite import gguf_meta
    from plug_lite.runs import ExportRecord
    from plug_lite.spec import EXPORT_KEY

    run, _, _ = chain
    rep = ExportRecord.load(run)
    assert rep.export_id and len(rep.export_id) == 16
    for path in [f.path for f in rep.files.values()] + ([rep.adapter_gguf] if rep.adapter_gguf else []):
        assert gguf_meta.read_metadata(path)[EXPORT_KEY] == rep.export_id, path
    assert EXPORT_KEY not in gguf_meta.read_metadata(rep.base_gguf)  # the untuned base: no PLUG keys


def test_files_another_export_wrote_are_named_before_they_are_replaced(tiny_gguf, tmp_path):
    """A second run exported under the same names replaces the first's files: export says so,
    naming each (and the first run's share then refuses them: tests/test_share.py)."""
    from plug_lite import gguf_meta
    from plug_lite.export.converting import Written, replaced_exports
    from plug_lite.runs import ExportedFile, ExportRecord
    from plug_lite.spec import EXPORT_KEY

    stage, out = tmp_path / "stage", tmp_path / "gguf"
    stage.mkdir(), out.mkdir()
    names = {"F16": "M-PLUG-zh-F16.gguf", "Q8_0": "M-PLUG-zh-Q8_0.gguf", "Q4_K_M": "M-PLUG-zh-Q4_K_M.gguf"}
    written = Written(files={k: stage / n for k, n in names.items()}, adapter=stage / "M-PLUG-zh-LoRA-F16.gguf",
                      base=stage / "M-F16.gguf", export_id="new0new0new0new0")
    for p in written.paths():
        shutil.copy(tiny_gguf, p)
    gguf_meta.write_keys(tiny_gguf, out / names["F16"], {EXPORT_KEY: "mine1111mine1111"})  # this run's last export
    gguf_meta.write_keys(tiny_gguf, out / names["Q8_0"], {EXPORT_KEY: "other222other222"})  # another run's
    shutil.copy(tiny_gguf, out / names["Q4_K_M"])  # no export id, not in this run's record
    shutil.copy(tiny_gguf, out / "M-F16.gguf")  # the untuned base: the same bytes whichever run wrote it
    previous = ExportRecord(files={"F16": ExportedFile(out / names["F16"], 1, "")}, export_id="mine1111mine1111")
    assert replaced_exports(written, out, previous) == [f"{out / names['Q8_0']} (export other222other222)",
                                                         f"{out / names['Q4_K_M']} (no export id)"]
    assert len(replaced_exports(written, out, None)) == 3  # a run never exported: none of them is its own
    # a report written before export ids: the files it lists are the run's own
    old = ExportRecord(files={k: ExportedFile(out / n, 1, "") for k, n in names.items()})
    assert replaced_exports(written, out, old) == [f"{out / names['F16']} (export mine1111mine1111)",
                                                   f"{out / names['Q8_0']} (export other222other222)"]


def test_module_and_verb_give_the_same_command():
    """``python -m plug_lite.export`` (the package's __main__) and ``python -m plug_lite export``."""
    outs = [subprocess.run([sys.executable, "-m", *how, "--help"], capture_output=True, text=True)
            for how in (["plug_lite.export"], ["plug_lite", "export"])]
    assert [p.returncode for p in outs] == [0, 0], [p.stderr for p in outs]
    assert outs[0].stdout == outs[1].stdout
    assert outs[0].stdout.startswith("usage: plug-lite export ")
    for flag in ("--quant", "--outtype", "--plain-merge", "--no-adapter", "--with-base", "--no-verify", "--prompts",
                 "--max-new-tokens", "--stop-budget"):
        assert flag in outs[0].stdout
