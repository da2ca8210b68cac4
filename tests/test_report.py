"""plug-lite report on hand-made judge results and answer files."""

from __future__ import annotations

import json
from pathlib import Path

from plug_lite import judge, report


def _pair(i, v1, v2, la=100, lb=100, cat="writing", status_a="ok"):
    outcome, incons = judge.combine(v1, v2)
    return {"id": f"p{i}", "category": cat, "dataset": "vicuna", "status_a": status_a, "status_b": "ok",
            "len_a": la, "len_b": lb, "order_ab": {"verdict": v1, "error": None if v1 else "no verdict"},
            "order_ba": {"verdict": v2, "error": None if v2 else "no verdict"}, "outcome": outcome,
            "inconsistent": incons, "consistent": outcome != "error" and judge._side(v1, True) == judge._side(v2, False)}


def _results(tmp_path: Path, lang: str, pairs: list[dict], a_file: Path | None = None) -> Path:
    res = {
        "mode": "pairwise", "lang": lang, "judge": {"model": "judge-x"}, "prompt": {"hash": "abc", "name": "p"},
        "files": {"a": {"name": "plug", "path": str(a_file or tmp_path / "missing.jsonl")},
                  "b": {"name": "mono", "path": str(tmp_path / "missing.jsonl")}},
        "pairs": pairs, "aggregate": judge.aggregate(pairs, bootstrap=100, seed=0),
    }
    p = tmp_path / f"judge_{lang}.json"
    p.write_text(json.dumps(res))
    return p


def test_report_tables_chart_and_offline_metrics(tmp_path):
    ans = tmp_path / "plug_zh.jsonl"
    ans.write_text("".join(json.dumps({"id": f"p{i}", "answer": "这是一个用中文写的回答，内容完整。", "status": "ok", "lang": "zh",
                                       "tokens": {"completion": 40, "pivot": 30, "target": 10}}, ensure_ascii=False) + "\n"
                           for i in range(3)))
    zh = [_pair(0, "A", "B"), _pair(1, "A", "C", la=400), _pair(2, "B", "B"), _pair(3, None, "A", status_a="not_found")]
    ko = [_pair(0, "B", "A", cat="math"), _pair(1, "C", "C")]
    out = tmp_path / "rep"
    rc = report.cli([str(_results(tmp_path, "zh", zh, ans)), str(_results(tmp_path, "ko", ko)), "--out", str(out)])
    assert rc == 0
    md = (out / "report.md").read_text()
    # zh: a_win 1, a_slight 1, tie 1 (inconsistent), error 1 -> adjusted (2 + 0.5) / 3
    assert "| plug vs mono | 4 | 1 | 1 | 1 | 0 | 0 | 1 | 1 | 2 | 83.3%" in md
    assert "### Language: ko" in md and "| plug vs mono | 2 | 0 | 0 | 1 | 0 | 1 | 0 | 0 | 0 | 25.0%" in md
    assert "A longer (>1.5x)" in md and "A not_found / B ok" in md and "`p3`: no verdict" in md
    assert "position consistency" in md and "66.7%" in md  # zh: 2 of 3 valid pairs agree
    assert "plug_zh.jsonl | zh | 3 | - | 100.0%" in md and "75.0%" in md  # no finish_reason recorded; pivot share 30/40
    assert (out / "winrate.png").read_bytes()[:4] == b"\x89PNG"
    js = json.loads((out / "report.json").read_text())
    assert js["offline"]["plug_zh.jsonl"]["language_fidelity"] == 1.0
    assert [r["target"] for r in js["results"]] == ["zh", "ko"]  # from judge.json files that say "lang" (before issue 13)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_offline_only_and_bad_input(tmp_path, capsys):
    ans = tmp_path / "a.jsonl"
    ans.write_text(json.dumps({"id": "1", "answer": "Una risposta in italiano, scritta bene.", "status": "truncated",
                               "lang": "it"}) + "\n")
    assert report.cli(["--offline", str(ans), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| a.jsonl | it | 1 | - | 0.0% | 100.0% |" in md and not (tmp_path / "r" / "winrate.png").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert report.cli([str(bad), "--out", str(tmp_path / "r2")]) == 2
    assert "not a plug-lite judge results file" in capsys.readouterr().err
