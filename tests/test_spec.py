"""The facts with one owner each (issue 13): the PLUG spec and its conversions, the GGUF value
types and the command lines built from typed mains (the run-folder layout and names:
tests/test_runs.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plug_lite import cli, gguf_meta, languages, runs, spec
from plug_lite.io import UserError
from plug_lite.spec import PlugSpec, SpecError

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
    assert runs.RunRecord.from_dict(s.run_fields()).spec == s  # plug_run.json is read back by runs.RunRecord
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
        runs.RunRecord.from_dict({"format": "plug"}, "run.json")


def test_gguf_value_types_are_gguf_pys():
    constants = pytest.importorskip("gguf.constants")
    assert {m.name: m.value for m in constants.GGUFValueType} == {k: v[0] for k, v in gguf_meta.VALUE_TYPES.items()}


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
