"""Language confusion inside answers (plug_lite.confusion) on constructed answers whose counts
follow from the rules in the module's docstring."""

from __future__ import annotations

import json

import pytest

from plug_lite import report
from plug_lite.confusion import answer_confusion, check_text, records_confusion, stray_words
from plug_lite.metrics import offline_metrics

CLEAN_ZH = "随着白昼变短，树木停止制造叶绿素。\n叶绿素分解后，叶子里的黄色便显现出来。"
ENGLISH_LINE = "随着白昼变短，树木停止制造叶绿素。\nThis happens because chlorophyll breaks down.\n叶子里的黄色便显现出来。"
STRAY_WORD = "树木停止制造叶绿素，因为 temperature 下降了。"
# a name (Albert Einstein), inline code, a code block, a version, a year and a unit: none counts
CODE_AND_NAME = ("爱因斯坦（Albert Einstein）提出了相对论。可以用 `print('hello world')` 输出：\n"
                 "```python\nfor word in ['hello', 'world']:\n    print(word)\n```\n"
                 "Python 3.11 版本发布于 2024 年，这台电脑重 2 kg，详见 https://example.org/docs/intro。")
KOREAN_HANJA = "대한민국(大韓民國)의 수도는 서울이다.\n학교(學校)에 가서 공부합니다."


def verdicts(text, lang="zh", other="en"):
    return [v.in_language for v in check_text(text, lang, other)]


@pytest.mark.parametrize("text, lang, lines, words", [
    (CLEAN_ZH, "zh", [True, True], []),
    (ENGLISH_LINE, "zh", [True, False, True], ["happens", "because", "chlorophyll", "breaks", "down"]),
    (STRAY_WORD, "zh", [True], ["temperature"]),
    (CODE_AND_NAME, "zh", [True, True], []),
    (KOREAN_HANJA, "ko", [True, True], []),
])
def test_constructed_answers_give_the_documented_counts(text, lang, lines, words):
    assert verdicts(text, lang) == lines
    assert stray_words(text, lang) == words


def test_rules_at_the_edges():
    # a line of a name and numbers only is no evidence; Hanja alone is not Korean... but counts for ko
    assert verdicts("Albert Einstein 1879\n中文。") == [None, True]
    assert verdicts("大韓民國", "ko") == [True]
    # Chinese written inside a Korean answer would count as Korean (Hanja); a Japanese line in Chinese
    # does not: kana are another script
    assert verdicts("これは日本語の文です。", "zh") == [False]
    # Latin target: one-letter and capitalised words are not evidence for it either; py3langid decides
    # between the target and the other language on lines of three words or more
    assert verdicts("Il cielo è blu perché la luce si diffonde.\nThe sky is blue because light scatters.\nOk!",
                    "it", "en") == [True, False, None]
    assert stray_words("Il cielo è blu, the sky", "it") == []  # word level is for non-Latin targets only
    # mentions are not uses: quoted words, a parenthesised gloss, a function name before "("
    mentions = "只保留物种为'cat'的行，不使用max()，意大利的“aperitivo”传统，餐前酒（aperitivo），종(species)이다。"
    assert stray_words(mentions, "zh") == [] and stray_words(mentions + "然后 then 结束。", "zh") == ["then"]
    # pivot section: English expected, Chinese is the other language
    assert verdicts("The word 秋天 means autumn in Chinese.\n秋天的叶子是黄色的。", "en", "zh") == [True, False]


def record(answer, *, pivot_instruction="Why do leaves change colour?", pivot_response="Chlorophyll breaks down.",
           target="zh", fmt="plug"):
    return {"id": answer[:6], "instruction": "问题", "answer": answer, "target_response": answer, "status": "ok",
            "format": fmt, "target": target, "pivot": "en" if fmt == "plug" else None,
            "pivot_instruction": pivot_instruction if fmt == "plug" else None,
            "pivot_response": pivot_response if fmt == "plug" else None, "output": answer}


def test_file_figures_in_offline_metrics_and_the_report(tmp_path):
    recs = [record(CLEAN_ZH), record(ENGLISH_LINE), record(STRAY_WORD), record(CODE_AND_NAME),
            record("", pivot_response="秋天的叶子是黄色的。")]  # empty answer; a Chinese line in the pivot
    c = records_confusion(recs)
    # 4 answers with text: line-clean all but ENGLISH_LINE; word-clean all but ENGLISH_LINE and STRAY_WORD
    assert (c["target"]["answers"], c["target"]["line_clean_rate"]) == (4, 3 / 4)
    assert (c["target"]["word_answers"], c["target"]["word_clean_rate"], c["target"]["stray_words"]) == (4, 2 / 4, 6)
    assert c["target"]["lines"] == 2 + 3 + 1 + 2 and c["target"]["wrong_lines"] == 1
    # 5 pivot sections, the last one's response is Chinese
    assert (c["pivot"]["answers"], c["pivot"]["line_clean_rate"]) == (5, 4 / 5)
    assert c["target"]["examples"][0] == "This happens because chlorophyll breaks down."
    m = offline_metrics(recs)
    assert (m["line_clean_rate"], m["word_clean_rate"], m["pivot_line_clean_rate"]) == (3 / 4, 2 / 4, 4 / 5)
    mono = offline_metrics([record(CLEAN_ZH, fmt="mono")])
    assert mono["line_clean_rate"] == 1 and mono["pivot_line_clean_rate"] is None
    assert answer_confusion(record(KOREAN_HANJA, target="ko"))["target"]["line_clean_rate"] == 1
    path = tmp_path / "plug_zh.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    assert report.cli(["--offline", str(path), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| plug_zh.jsonl"))
    assert "| 75.0% | 50.0% | 80.0% |" in row
    assert "`This happens because chlorophyll breaks down.`" in md
