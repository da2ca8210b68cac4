"""The facts with one owner each (issue 13): the PLUG spec and its conversions, the GGUF value
types, the run-folder layout and names, and the command lines built from typed mains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plug_lite import cli, gguf_meta, languages, runs, spec
from plug_lite.io import UserError
from plug_lite.spec import PlugSpec, SpecError, upgrade_answer

REPO = Path(__file__).resolve().parents[1]


def test_spec_is_checked_once_and_normalised():
    s = PlugSpec("plug", "ZH", languages.get("en"))
    assert (s.format, s.target, s.pivot, s.think) == ("plug", "zh", "en", False)
    assert PlugSpec("mono", "zh", "zh").pivot == "zh" and PlugSpec("mono", "zh", None).pivot is None
    assert PlugSpec("mono", "zh", None).pivot_used is None and PlugSpec("plug", "zh").pivot_used == "en"
    assert PlugSpec("pivot_only", "ko", "").pivot == "en"  # nothing recorded: the default pivot
    for args, message in ((("plug", "zh", "zh"), "differ"), (("both", "zh"), "unknown format"),
                          (("mono", "zh", "en", True), "think"), (("plug", "xx"), "unknown language code 'xx'")):
        with pytest.raises(languages.LanguageError, match=message) as e:
            PlugSpec(*args)
        assert isinstance(e.value, (SpecError, languages.LanguageError)) and "\n" not in str(e.value)
    with pytest.raises(UserError):  # a SpecError is a UserError too: exit code 2 on the command line
        PlugSpec("plug", "zh", "zh")


def test_system_prompts_come_from_the_spec():
    assert PlugSpec("plug", "ko").system_prompt() == spec.system_prompt("plug", "ko", "en")
    assert "<think>" in PlugSpec("plug", "ko", think=True).system_prompt()
    assert spec.system_prompt("mono", "ko", think=True) == PlugSpec("mono", "ko").system_prompt()  # think: plug only
    assert "Korean" in PlugSpec("mono", "ko", None).system_prompt()


def test_conversions_round_trip():
    s = PlugSpec("plug", "zh", "en", think=True)
    assert s.row_fields() == {"format": "plug", "target": "zh", "pivot": "en"}
    assert PlugSpec.from_run(s.run_fields()) == s
    md = s.gguf_fields()
    assert md == {"plug.format": "plug", "plug.target": "zh", "plug.pivot": "en", "plug.think": "true"}
    assert tuple(md) == spec.PLUG_KEYS and PlugSpec.from_gguf(md) == s
    assert PlugSpec("mono", "ko", None).gguf_fields()["plug.pivot"] == ""
    assert PlugSpec.from_gguf({"general.name": "x"}) is None  # a plain chat model
    assert PlugSpec.from_gguf({"general.name": "x"}, target="ko") == PlugSpec("plug", "ko")  # flags over nothing
    assert PlugSpec.from_gguf(md, format="mono").think is False  # think is a plug variant
    with pytest.raises(UserError, match="m.gguf: no plug.target"):
        PlugSpec.from_gguf({"plug.format": "plug"}, where="m.gguf")
    rows = [{"format": "mono", "target": "zh", "pivot": "zh"}, {"format": "mono", "target": "zh", "pivot": "zh"}]
    assert PlugSpec.from_rows(rows, format="plug", target="ko", pivot="en") == PlugSpec("mono", "zh", "zh")
    mixed = rows + [{"format": "mono", "target": "ko", "pivot": "ko"}]
    assert PlugSpec.from_rows(mixed, format="mono", target="es", pivot="en").target == "es"  # rows disagree
    with pytest.raises(UserError, match="run.json: missing field 'target'"):
        PlugSpec.from_run({"format": "plug"}, "run.json")


def test_answer_records_before_and_after_the_rename():
    old = {"id": "1", "answer": "好", "target": "好", "lang": "zh", "pivot": "en", "_where": "a.jsonl:1"}
    new = upgrade_answer(old)
    assert new == {"id": "1", "answer": "好", "pivot": "en", "_where": "a.jsonl:1", "target_response": "好", "target": "zh"}
    assert upgrade_answer(new) is new and old["target"] == "好"  # today's records pass through; nothing mutated


def test_gguf_value_types_are_gguf_pys():
    constants = pytest.importorskip("gguf.constants")
    assert {m.name: m.value for m in constants.GGUFValueType} == {k: v[0] for k, v in gguf_meta.VALUE_TYPES.items()}


def test_one_naming_rule_and_the_work_folder(tmp_path):
    assert runs.run_name("plug", "zh") == "plug-zh"
    assert runs.run_name("mono", "ko", model="Qwen2.5 0.5B/x") == "Qwen2.5-0.5B-x-mono-ko"
    work = runs.WorkFolder(tmp_path)
    assert work.run_dir("plug", "zh") == tmp_path / "runs" / "plug-zh"
    assert work.data_file("mono", "ko") == tmp_path / "data" / "train.mono.ko.jsonl"
    assert work.answers_file("zh", "alpacaeval", "plug") == tmp_path / "eval" / "zh" / "alpacaeval.plug.jsonl"
    assert work.judge_dir("zh", "alpacaeval") == tmp_path / "eval" / "zh" / "judge-alpacaeval"
    assert work.report_dir("zh") == tmp_path / "eval" / "zh" / "report" and work.gguf_dir == tmp_path / "gguf"
    run = work.run_dir("plug", "zh")
    assert not runs.is_finished(run) and runs.export_report(run) is None
    with pytest.raises(UserError, match="not found"):
        runs.read_run(run)
    run.mkdir(parents=True)
    (run / runs.RUN_FILE).write_text(json.dumps({"format": "plug", "target": "zh"}))
    assert runs.is_finished(run) and runs.run_spec(runs.read_run(run)) == PlugSpec("plug", "zh")
    gguf = tmp_path / "gguf" / "m-Q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    report = {"files": {"Q8_0": {"path": str(gguf), "bytes": 4}}, "verify": {"greedy": {}}}
    (run / runs.EXPORT_REPORT).write_text(json.dumps(report))
    assert runs.export_report(run) == report and runs.export_report(run, "q8_0") == report
    assert runs.export_report(run, "Q4_K_M") is None and runs.exported_gguf(run) == gguf
    with pytest.raises(UserError, match="no Q4_K_M file exported"):
        runs.exported_gguf(run, "Q4_K_M")
    (run / runs.EXPORT_REPORT).write_text(json.dumps({**report, "verify": {"error": "parity"}}))
    assert runs.export_report(run) is None  # a failed parity check is not an export


def _verb_main(a: int, b: str = "x", *, out: str, flag: bool = True, quants: list[str] = ("Q4",),
               target: str | None = None, n: float = 0.5) -> dict:
    """A verb.

    Args:
        a: the first
        b: the second, on
            two lines
        out: where it goes
        flag: a switch
        quants: repeatable
        target: the language
        n: a number
    """
    return dict(a=a, b=b, out=out, flag=flag, quants=quants, target=target, n=n)


def test_flags_from_a_typed_main():
    ap = cli.parser_for(_verb_main, prog="t", positional=("a", "b"), names={"target": ("--target", "--lang")},
                        parser=__import__("argparse").ArgumentParser(prog="t"))
    text = ap.format_help()
    assert "the second, on two lines" in text and "--flag, --no-flag" in text and "--target TARGET, --lang TARGET" in text
    assert "a number (default: 0.5)" in text
    got = cli.parse(ap, _verb_main, ["3", "--out", "o", "--no-flag", "--lang", "zh", "--quants", "Q8", "--quants", "F16"])
    assert _verb_main(**got) == dict(a=3, b="x", out="o", flag=False, quants=["Q8", "F16"], target="zh", n=0.5)
    got = cli.parse(ap, _verb_main, ["3", "y", "--out", "o"])
    assert _verb_main(**got)["quants"] == ("Q4",) and _verb_main(**got)["b"] == "y"  # an unset list keeps the default
    with pytest.raises(SystemExit):
        ap.parse_args(["3"])  # --out is required: it has no default


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_python_m_plug_lite_lists_the_verbs_and_each_help_comes_from_main():
    r = _run("-m", "plug_lite", "--help")
    assert r.returncode == 0 and all(verb in r.stdout for verb in cli.VERBS)
    assert _run("-m", "plug_lite", "nope").returncode == 2
    for verb, flag in (("generate", "--target TARGET, --lang TARGET"), ("judge", "--report, --no-report"),
                       ("chat", "--json, --no-json"), ("export", "--verify, --no-verify"),
                       ("report", "--chart, --no-chart"), ("demo", "--target TARGET, --lang TARGET"),
                       ("translate", "--dry-run"), ("extract", "--format {plug,mono,pivot_only}"),
                       ("share", "--push USER/REPO"), ("train", "--think, --no-think")):
        r = _run("-m", "plug_lite", verb, "--help")
        assert r.returncode == 0 and flag in r.stdout, (verb, r.stdout + r.stderr)
    r = _run("-m", "plug_lite", "data", "build", "--help")
    assert r.returncode == 0 and "--system, --no-system" in r.stdout
