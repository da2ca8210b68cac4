"""The facts with one owner each (issue 13): the PLUG spec and its conversions and the GGUF value
types (the run-folder layout and names: tests/test_runs.py; the command lines built from typed
mains: tests/test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plug_lite import gguf_meta, languages, runs, spec
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
