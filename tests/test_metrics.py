"""Offline metrics and the X-SVAMP number extractor."""

from __future__ import annotations

import pytest

from plug_lite.metrics import extract_number, numbers_equal, offline_metrics, svamp_accuracy


@pytest.mark.parametrize("text,lang,want", [
    ("3 + 4 = 7, so she has 7 apples left. Answer: 7", "en", 7),
    ("He had 12 apples, gave away 5. Answer: 7 apples.", "en", 7),
    ("He had 12 apples and gave away 5, leaving 7.", "en", 7),
    ("答案：１２", "zh", 12),
    ("小明有３个苹果，又买了１５个，所以一共有１８个。", "zh", 18),
    ("答案是 45。后面还有 3 个问题。", "zh", 45),
    ("정답: 1,234개", "ko", 1234),
    ("따라서 답은 56입니다.", "ko", 56),
    ("Risposta: 3,5 litri", "it", 3.5),
    ("La risposta è 1.000 euro.", "it", 1000),
    ("La respuesta es 1.000 manzanas.", "es", 1000),
    ("Respuesta: -4", "es", -4),
    ("The total is 1,234,567 dollars", "en", 1234567),
    ("It costs 12.5.", "en", 12.5),
    ("no digits at all", "en", None),
    ("", "en", None),
])
def test_extract_number(text, lang, want):
    got = extract_number(text, lang)
    if want is None:
        assert got is None
    else:
        assert got == pytest.approx(want)


def test_accuracy():
    assert numbers_equal(7.0, 7) and not numbers_equal(None, 7) and not numbers_equal(7.01, 7)
    assert svamp_accuracy([7, None, 3.0], [7, 2, 3]) == pytest.approx(2 / 3)


def _rec(answer, status="ok", pivot=0, target=10, completion=None, lang="zh"):
    return {"id": answer[:5], "answer": answer, "status": status, "lang": lang,
            "tokens": {"prompt": 20, "completion": completion if completion is not None else pivot + target,
                       "pivot": pivot, "target": target}}


def test_offline_metrics_hand_computed():
    recs = [
        _rec("冰箱通过制冷剂循环把热量从内部带走，所以食物能保持低温。", pivot=30, target=10),
        _rec("飞机的尾迹是发动机排出的水蒸气在高空遇冷凝结形成的。", pivot=50, target=10),
        _rec("The refrigerator moves heat out of the box with a refrigerant.", status="monolingual", pivot=0, target=20),
        _rec("", status="not_found", pivot=0, target=0, completion=40),
    ]
    m = offline_metrics(recs, "zh")
    assert m["n"] == 4
    assert m["status_share"] == {"ok": 0.5, "truncated": 0.0, "monolingual": 0.25, "not_found": 0.25}
    assert m["format_compliance"] == 0.5
    assert m["language_fidelity"] == pytest.approx(2 / 3)  # empty answer excluded; the English one misses
    assert m["empty_answers"] == 1
    assert m["pivot_overhead"] == pytest.approx(80 / (40 + 60 + 20 + 40))
    assert m["pivot_tokens_mean"] == pytest.approx(20)
    lengths = [len(r["answer"]) for r in recs]
    assert m["answer_chars_mean"] == pytest.approx(sum(lengths) / 4)
    # the language defaults to the records' own field
    assert offline_metrics(recs)["language_fidelity"] == m["language_fidelity"]
    assert offline_metrics(recs, "en")["language_fidelity"] == pytest.approx(1 / 3)


def test_offline_metrics_count_answers_that_ended_by_themselves():
    recs = [{"status": "ok", "answer": "好的。", "lang": "zh", "finish_reason": r} for r in ("stop", "stop", "length", "stop")]
    m = offline_metrics(recs, "zh")
    assert m["finish_reasons"] == {"stop": 3, "length": 1} and m["stopped"] == 0.75
    assert offline_metrics([{"status": "ok", "answer": "x"}], "en")["stopped"] is None  # not recorded


@pytest.mark.parametrize("line, field", [
    ('{"id": 1, "answer": "好", "target": "zh", "pivot": true}', "'pivot' must be a string, not true"),
    ('{"id": 1, "answer": ["好"], "target": "zh"}', "'answer' must be a string, not [\"好\"]"),
    ('{"id": 1, "answer": "好", "lang": 7}', "'target' must be a string, not 7"),
    ('{"id": 1, "answer": "好", "target": "zh", "tokens": [3]}', "'tokens' must be an object of token counts"),
    ('{"id": 1, "answer": "好", "target": "zh", "tokens": {"pivot": "x"}}', "'tokens.pivot' must be a number"),
    ('{"id": 1, "answer": "好", "target": "zh", "seconds": "fast"}', "'seconds' must be a number"),
])
def test_answer_field_of_the_wrong_type_is_one_line_naming_record_and_field(tmp_path, line, field):
    """Found by tests/test_readers_fuzz.py in CI: ``"pivot": true`` reached str methods."""
    from plug_lite import io

    f = tmp_path / "answers.jsonl"
    f.write_text('{"id": 0, "answer": "你好", "target": "zh"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(io.UserError) as e:
        offline_metrics(io.read_records(f), "zh")
    assert str(e.value).startswith(f"{f}:2: field {field}") and "\n" not in str(e.value)
