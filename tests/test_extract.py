"""plug-lite extract: statuses, kept raw output, JSON and JSONL input, CLI errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plug_lite import extract, formats
from plug_lite.io import UserError

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures"


def _read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_extract_fixture(tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    res = extract.main(file=FIX / "outputs.zh.jsonl", target="zh", out=out)
    assert res["counts"] == {"ok": 2, "truncated": 1, "monolingual": 1, "not_found": 1}
    recs = {r["id"]: r for r in _read_jsonl(out)}
    raw = {r["id"]: r for r in _read_jsonl(FIX / "outputs.zh.jsonl")}
    for rid, r in recs.items():
        assert r["output"] == raw[rid]["output"]  # raw output kept
        p = formats.parse(raw[rid]["output"], target="zh", finished=raw[rid].get("finish_reason") != "length")
        assert (r["extract_status"], r["extracted"], r["target_response"]) == (p.status, p.answer, p.target)
    assert recs["o1"]["target_response"] == "喉部肌肉放松时会颤动。"
    assert recs["o1"]["pivot_response"] == "Relaxed larynx muscles."
    assert recs["o2"]["extract_status"] == "truncated"  # finish_reason "length"
    assert recs["o3"]["extract_status"] == "monolingual" and recs["o3"]["extracted"] == "Wide and blue."
    assert recs["o4"]["extract_status"] == "not_found"
    assert recs["o5"]["target_response"] == "你好" and recs["o5"]["extract_extra"] == "中文回复：你好"
    printed = capsys.readouterr().out
    assert "ok" in printed and "monolingual" in printed and "wrote 5 records" in printed


def test_json_input_other_field_and_default_out(tmp_path):
    src = tmp_path / "gen.json"
    src.write_text(json.dumps([{"id": 1, "text": "Respuesta en español: Hola."},
                               {"id": 2, "text": "English response: Hi.", "finished": False}]), encoding="utf-8")
    res = extract.main(file=src, target="es", field="text", fmt="mono")
    assert res["out"] == str(tmp_path / "gen.extracted.jsonl")
    recs = _read_jsonl(res["out"])
    assert recs[0]["extracted"] == "Hola." and recs[0]["extract_status"] == "ok"
    assert recs[1]["extract_status"] == "truncated"


def test_pivot_only_format(tmp_path):
    src = tmp_path / "g.jsonl"
    src.write_text(json.dumps({"id": 1, "output": "English instruction: q\n\nEnglish response: a"}) + "\n",
                   encoding="utf-8")
    res = extract.main(file=src, target="ko", fmt="pivot_only", out=tmp_path / "o.jsonl")
    assert res["counts"]["ok"] == 1
    assert _read_jsonl(tmp_path / "o.jsonl")[0]["extracted"] == "a"


def test_errors(tmp_path):
    src = tmp_path / "g.jsonl"
    src.write_text(json.dumps({"id": 1, "answer": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"g.jsonl:1: missing field 'output'"):
        extract.main(file=src, target="zh")
    with pytest.raises(UserError, match="overwrite the input"):
        extract.main(file=src, target="zh", field="answer", out=src)
    with pytest.raises(UserError, match="differ"):
        extract.main(file=src, target="en", field="answer")
    assert list(tmp_path.iterdir()) == [src]


def test_cli_exit_codes(tmp_path):
    out = tmp_path / "o.jsonl"
    cmd = [sys.executable, "-m", "plug_lite.cli", "extract", str(FIX / "outputs.zh.jsonl"), "--target", "zh",
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(_read_jsonl(out)) == 5
    r = subprocess.run(cmd[:-2] + ["--field", "nope", "--out", str(tmp_path / "p.jsonl")], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "missing field 'nope'" in r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "p.jsonl").exists()
