"""The main job's driver (plug_lite.demo) end to end on the tiny model: both formats trained,
exported, chatted with, answered, measured and judged (by the scripted local server); a second run
reuses every artefact. `make demo` runs the same code on the embedded Gemma-3-270M."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from scripted_openai import ScriptedOpenAI  # noqa: E402


def test_demo_runs_the_whole_loop_and_reuses_it(tmp_path, tiny_model, monkeypatch, capsys):
    from plug_lite import demo

    monkeypatch.setenv("PLUG_LITE_JUDGE_API_KEY", "test-demo-SECRET-000111222")
    kwargs = dict(target="ko", work_dir=str(tmp_path / "runs"), gguf_dir=str(tmp_path / "gguf"),
                  model=str(tiny_model), preset="cpu-tiny", steps=2, eval_limit=2, max_new_tokens=12,
                  judge_model="judge-x", drift_rows=4)
    with ScriptedOpenAI("The first is better. [[A]]") as srv:
        monkeypatch.setenv("PLUG_LITE_JUDGE_BASE_URL", srv.url)
        summary = demo.main(**kwargs)
        first_calls = srv.calls
        root = tmp_path / "runs" / "demo-ko"
        answers = {fmt: (root / "eval" / "ko" / f"sample.{fmt}.jsonl").read_text(encoding="utf-8") for fmt in ("plug", "mono")}
        stamps = {p: p.stat().st_mtime_ns for p in (root / "runs" / "plug-ko" / "plug_run.json",
                                                      root / "runs" / "mono-ko" / "plug_run.json",
                                                      Path(summary["gguf"]["plug"]), Path(summary["gguf"]["mono"]))}
        again = demo.main(**kwargs)
        second_calls = srv.calls - first_calls

    # Both models exported under the naming convention, both answer files complete.
    assert Path(summary["gguf"]["plug"]).name.endswith("-PLUG-ko-Q8_0.gguf")
    assert Path(summary["gguf"]["mono"]).name.endswith("-Mono-ko-Q8_0.gguf")
    for fmt in ("plug", "mono"):
        lines = [json.loads(l) for l in answers[fmt].splitlines()]
        assert [r["id"] for r in lines] == ["xa-01", "xa-02"] and {r["format"] for r in lines} == {fmt}
        assert summary["offline"][fmt]["n"] == 2
    # The judge ran both orders for both pairs; this one always prefers the answer shown first,
    # which the paper's aggregation turns into ties flagged as inconsistent.
    assert first_calls == 4
    assert summary["judge"]["tie"] == 2 and summary["judge"]["inconsistent"] == 2
    assert summary["judge"]["a_win"] == summary["judge"]["b_win"] == 0
    report = Path(summary["report"]).read_text(encoding="utf-8")
    assert "sample.plug.jsonl" in report and "sample.mono.jsonl" in report
    # the line-level language confusion of both models, in the report and the printed table
    assert "lines all in target" in report
    for fmt in ("plug", "mono"):
        rate = summary["offline"][fmt]["line_clean_rate"]
        assert rate is None or 0 <= rate <= 1
    # The report a person reads: base / PLUG / mono side by side, stop rates, time per step, loss plot.
    base = [json.loads(l) for l in (root / "eval" / "ko" / "sample.base.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in base] == ["xa-01", "xa-02"] and {r["format"] for r in base} == {"mono"}
    assert [e["id"] for e in summary["examples"]] == ["xa-01", "xa-02"]
    first = summary["examples"][0]
    assert first["base"] == base[0]["output"].strip() and first["plug_finish"] in ("stop", "length")
    assert "## The first 2 evaluation instructions, answered three ways" in report
    assert "| base (untuned) | PLUG: English pivot | PLUG: answer | mono: answer |" in report
    assert set(summary["stopped"]) == {"plug", "mono"} and "Did the models end their answers?" in report
    assert set(summary["step_seconds"]) >= {"train_plug", "train_mono", "export", "answers"}
    assert (root / "eval" / "ko" / "report" / "loss.png").stat().st_size > 1000 and "![training loss" in report
    assert set(summary["export_stops"]["plug"]) >= {"merged", "Q8_0"}
    # The drift of each shipped file from the F16 on held-out rows, by language, in the report.
    assert "## How far the shipped files drift from the F16" in report
    for fmt, langs in (("plug", {"en", "ko"}), ("mono", {"ko"})):
        d = summary["drift"][fmt]
        assert d["reference"] == "F16" and set(d["files"]) == {"Q8_0"} and d["rows"] == 4
        assert "not trained on" in d["text"] and set(d["files"]["Q8_0"]["languages"]) == langs
        assert f"{d['files']['Q8_0']['languages']['ko']['kl_mean']:.3f} / " in report
    out = capsys.readouterr()
    assert "PLUG demo (ko) finished" in out.out and "test-demo-SECRET" not in out.out + out.err
    assert "lines ok" in out.out
    assert "[1] " + first["instruction"] in out.out and "base (untuned" in out.out and "time per step:" in out.out
    assert out.out.count("drift against F16 on ") >= 2  # export's table and the demo's, per model
    # Second run: nothing retrained, re-exported, re-answered or re-judged.
    assert second_calls == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    for fmt in ("plug", "mono"):
        assert (root / "eval" / "ko" / f"sample.{fmt}.jsonl").read_text(encoding="utf-8") == answers[fmt]
    assert again["judge"] == summary["judge"]
