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


def test_truthfulqa_answers_of_the_wrong_type(tmp_path):
    """Found by tests/test_readers_fuzz.py: ``"correct_answers": false`` was iterated."""
    f = tmp_path / "truthful.jsonl"
    f.write_text('{"id": 1, "instruction": "q?", "correct_answers": ["a"], "incorrect_answers": "b; c"}\n'
                 '{"id": 2, "instruction": "q?", "correct_answers": false, "incorrect_answers": ["b"]}\n')
    with pytest.raises(UserError, match=rf"^{f}:2: field 'correct_answers' must be a list of strings"):
        evalsets.load_eval_set(f, "en", task="truthfulqa")


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


# --- public files in their publishers' own layouts (our own small fixtures in those layouts) ------

PUB = FIX / "public"


def test_alpacaeval_model_outputs_without_ids():
    recs = evalsets.load_eval_set(PUB / "alpacaeval_model_outputs.json", "en")
    assert [r["id"] for r in recs] == ["1", "2", "3"]  # position, counted from 1
    assert recs[2]["instruction"] == "Convert 3 miles to kilometres."
    assert [r["dataset"] for r in recs] == ["helpful_base", "koala", "selfinstruct"]  # the record's own
    assert recs[0]["eval_set"] == "alpacaeval_model_outputs" and recs[0]["generator"] == "reference_model"
    assert recs[0]["source_file"] == str(PUB / "alpacaeval_model_outputs.json") and recs[0]["lang"] == "en"
    assert recs[1]["output"].startswith("Two thin wheels")


def test_truthfulqa_csv_columns_and_answer_split():
    recs = evalsets.load_eval_set(PUB / "TruthfulQA.csv", "en")
    assert [r["id"] for r in recs] == ["1", "2"]
    r0, r1 = recs
    assert r0["instruction"] == "Do goldfish forget everything after three seconds?"
    assert r0["category"] == "Misconceptions" and r0["Type"] == "Adversarial"
    assert r0["best_answer"] == "No, goldfish can remember things for months"
    assert r0["correct_answers"] == ["No, goldfish can remember things for months",
                                     "Goldfish have a memory of several months"]
    # a trailing ";" leaves no empty answer, a "," inside an answer does not split it
    assert r0["incorrect_answers"] == ["Yes, goldfish forget after three seconds", "A goldfish's memory lasts three seconds"]
    assert r1["instruction"] == "Does cracking your knuckles, over many years, cause arthritis?"
    assert r1["correct_answers"] == ["No", "Studies found no link between knuckle cracking and arthritis"]
    assert not {"Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Category"} & set(r0)


def test_truthfulqa_multi_json_array():
    recs = evalsets.load_eval_set(PUB / "truthfulqa_multi_es.json", "es")
    assert [r["id"] for r in recs] == ["1", "2"] and recs[0]["instruction"].startswith("¿Los peces")
    assert recs[0]["correct_answers"][1] == "Tienen memoria de varios meses" and recs[1]["category"] == "Health"
    assert recs[0]["mc1_targets"]["labels"] == [1, 0] and recs[0]["lang"] == "es"


def test_msvamp_json_lines_in_a_json_file():
    recs = evalsets.load_eval_set(PUB / "msvamp_Chinese.json", "zh")
    assert [r["id"] for r in recs] == ["1", "2", "3"]
    assert recs[0]["instruction"] == "汤姆有5个苹果。他又买了4个。他现在有多少个苹果？"  # m_query, not query
    assert recs[0]["query"].startswith("tom has 5 apples") and recs[2]["answer"] == "3.0"
    assert "response" not in recs[0] and recs[0]["source_file"].endswith("msvamp_Chinese.json")


def test_mgsm_tsv_without_and_with_a_header():
    recs = evalsets.load_eval_set(PUB / "mgsm_zh.tsv", "zh")
    assert [(r["id"], r["answer"]) for r in recs] == [("1", "36"), ("2", "18")]
    assert recs[0]["instruction"].startswith("小明有 3 盒铅笔") and recs[0]["source_file"].endswith("mgsm_zh.tsv")
    with_header = evalsets.load_eval_set(PUB / "mgsm_header_es.tsv", "es")
    assert [(r["id"], r["answer"]) for r in with_header] == [("q-a", "24"), ("q-b", "105")]


def test_llmzoo_label_is_the_category_and_vicuna_question_id():
    zoo = evalsets.load_eval_set(PUB / "llmzoo_zh100.jsonl", "zh")
    assert [(r["id"], r["category"]) for r in zoo] == [("1", "generic"), ("2", "coding"), ("3", "writing")]
    assert zoo[0]["instruction"] == "如何养成早起的习惯？" and "label" not in zoo[0] and "query" not in zoo[0]
    vic = evalsets.load_eval_set(PUB / "vicuna80_questions_Italian.jsonl", "it")
    assert [(r["id"], r["category"]) for r in vic] == [("1", "generic"), ("2", "knowledge")]
    assert vic[1]["instruction"] == "Spiega la differenza tra meteo e clima."
    assert {r["eval_set"] for r in vic} == {"vicuna80_questions_Italian"}


def test_svamp_gets_eval_set_and_source(tmp_path):
    recs = evalsets.load_eval_set(FIX / "svamp_original_format.json", "en")
    assert recs[0]["eval_set"] == "svamp_original_format" and recs[0]["dataset"] == "svamp_original_format"
    assert recs[0]["source_file"] == str(FIX / "svamp_original_format.json")
    assert evalsets.load_eval_set("sample", "zh")[0]["source_file"] == "plug_lite/resources/sample/eval.zh.json"


def test_public_layout_errors_are_one_line(tmp_path):
    bad = tmp_path / "mgsm_bad.tsv"
    bad.write_text("a question\t3\nanother\t4\textra\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"mgsm_bad.tsv:2: 3 columns, expected at most 2 \(a file without a header "
                                        r"row has the columns question, answer\)"):
        evalsets.load_eval_set(bad, "en")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"instruction": "a"}\n{"id": 7, "instruction": "b"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"mixed.jsonl:1: missing field 'id'"):
        evalsets.load_eval_set(mixed, "en")
    noanswer = tmp_path / "msvamp_x.json"
    noanswer.write_text('{"m_query": "q"}\n{"m_query": "r"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"msvamp_x.json:1: missing field 'answer'"):
        evalsets.load_eval_set(noanswer, "en")


@pytest.mark.parametrize("name, lang, n", [
    ("alpacaeval_model_outputs.json", "en", 3), ("TruthfulQA.csv", "en", 2), ("truthfulqa_multi_es.json", "es", 2),
    ("msvamp_Chinese.json", "zh", 3), ("mgsm_zh.tsv", "zh", 2), ("llmzoo_zh100.jsonl", "zh", 3),
    ("vicuna80_questions_Italian.jsonl", "it", 2)])
def test_cli_on_each_layout(tmp_path, capsys, name, lang, n):
    out = tmp_path / "o.jsonl"
    assert evalsets.cli([str(PUB / name), "--lang", lang, "--out", str(out)]) == 0
    assert f"{n} instructions ({lang})" in capsys.readouterr().out
    assert len(out.read_text(encoding="utf-8").split("\n")) == n + 1
