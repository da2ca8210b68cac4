"""Evaluation-set loaders: shipped sample, local files in the hub schemas, hub selection offline."""

from __future__ import annotations

import pytest

from plug_lite import evalsets
from plug_lite.io import UserError
from pathlib import Path

FIX = Path(__file__).resolve().parent / "fixtures"
COMMON = {"id", "instruction", "lang", "dataset", "category"}


@pytest.mark.parametrize("lang", ["en", "zh", "ko", "it", "es"])
def test_sample(lang):
    recs = evalsets.load_eval_set("sample", lang)
    assert len(recs) == 40
    assert all(COMMON <= set(r) and r["lang"] == lang and r["instruction"] for r in recs)
    assert len({r["id"] for r in recs}) == 40
    assert [r["id"] for r in recs] == [r["id"] for r in evalsets.load_eval_set("sample", "en")]
    assert len(evalsets.load_eval_set("sample", lang, limit=5)) == 5


def test_sample_unknown_language():
    with pytest.raises(UserError, match="no shipped sample evaluation set for 'de'"):
        evalsets.load_eval_set("sample", "de")


def test_local_x_alpacaeval_file():
    recs = evalsets.load_eval_set(FIX / "x_alpacaeval.zh.json", "zh")
    assert [r["id"] for r in recs] == ["e1", "e2", "e3"]
    assert recs[1]["category"] == ""  # optional category
    assert recs[0]["category"] == "open_qa" and recs[0]["dataset"] == "fixture" and recs[0]["lang"] == "zh"


def test_local_x_truthfulqa_file():
    recs = evalsets.load_eval_set(FIX / "x_truthfulqa.ko.jsonl", "ko")
    assert COMMON <= set(recs[0])
    assert recs[0]["correct_answers"] == ["아니요, 달은 암석입니다.", "달은 치즈가 아닙니다."]
    assert recs[0]["incorrect_answers"] == ["네, 달은 치즈입니다."]
    assert recs[0]["best_answer"].startswith("아니요")
    assert recs[0]["category"] == "Misconceptions" and "best_answer" not in recs[1]


def test_local_x_svamp_file_and_original_field_names():
    recs = evalsets.load_eval_set(FIX / "x_svamp.es.json", "es")
    assert [r["answer"] for r in recs] == [7.0, 8.0]
    orig = evalsets.load_eval_set(FIX / "svamp_original_format.json", "en")
    assert orig[0]["id"] == "chal-1"
    assert orig[0]["instruction"] == "Tom has 5 marbles. He finds 2 more. How many marbles does Tom have now?"
    assert orig[0]["answer"] == 7.0 and orig[0]["category"] == "Addition"


def test_task_fields_are_required():
    with pytest.raises(UserError, match="missing field 'correct_answers'"):
        evalsets.load_eval_set(FIX / "x_alpacaeval.zh.json", "zh", task="truthfulqa")
    with pytest.raises(UserError, match="missing field 'answer'"):
        evalsets.load_eval_set(FIX / "x_alpacaeval.zh.json", "zh", task="svamp")


@pytest.mark.parametrize(
    "name, message",
    [
        ("eval_missing_id.json", r"eval_missing_id.json: record 1: missing field 'id'"),
        ("eval_missing_instruction.jsonl", r"eval_missing_instruction.jsonl:2: missing field 'instruction'"),
        ("does_not_exist.json", "evaluation set not found"),
    ],
)
def test_bad_local_files(name, message):
    with pytest.raises(UserError, match=message) as e:
        evalsets.load_eval_set(FIX / name, "zh")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name, hub, split",
    [
        ("x-alpacaeval", "zhihz0535/X-AlpacaEval", "chinese"),
        ("X-AlpacaEval", "zhihz0535/X-AlpacaEval", "chinese"),
        ("x-truthfulqa", "zhihz0535/X-TruthfulQA_en_zh_ko_it_es", "chinese"),
        ("zhihz0535/X-SVAMP_en_zh_ko_it_es", "zhihz0535/X-SVAMP_en_zh_ko_it_es", "chinese"),
    ],
)
def test_hub_selection_offline_error(monkeypatch, name, hub, split):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        evalsets.load_eval_set(name, "zh")
    msg = str(e.value)
    assert f"'{hub}'" in msg and f"split '{split}'" in msg
    assert "local JSON/JSONL file" in msg and "\n" not in msg


def test_cli(tmp_path, capsys):
    out = tmp_path / "ev.jsonl"
    assert evalsets.cli(["sample", "--lang", "es", "--limit", "4", "--out", str(out)]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 4
    assert evalsets.cli(["nope.json", "--lang", "es"]) == 2
    assert "evaluation set not found" in capsys.readouterr().err


def test_hub_layouts_with_a_real_load_dataset(tmp_path):
    # A local folder goes through the same datasets.load_dataset call as a hub name; it has the
    # authors' per-language file layout, so the loader must fall back to it.
    (tmp_path / "zh").mkdir()
    (tmp_path / "zh" / "svamp_zh.json").write_text((FIX / "x_svamp.es.json").read_text(encoding="utf-8"),
                                                    encoding="utf-8")
    rows = evalsets._hub_eval(str(tmp_path), "zh", "svamp")
    assert [r["id"] for r in rows] == ["s1", "s2"] and rows[0]["answer"] == 7.0
    with pytest.raises(UserError, match="split 'korean'"):
        evalsets._hub_eval(str(tmp_path), "ko", "svamp")
