"""Building SFT rows: shipped sample, sources, drops and errors, CLI behaviour, token counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from plug_lite import data, formats, languages, spec
from plug_lite.io import UserError

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures"
PAPER = ("zh", "ko", "it", "es")


def _read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


# ----------------------------------------------------------------------------------------------
# The shipped sample


def test_sample_files_are_parallel_and_clean():
    ids = None
    for lang in ("en",) + PAPER:
        recs = _read_jsonl(data.SAMPLE_DIR / f"train.{lang}.jsonl")
        assert len(recs) == 120
        these = [r["id"] for r in recs]
        assert len(set(these)) == 120
        ids = ids or these
        assert these == ids  # same ids, same order in every language
        ev = json.loads((data.SAMPLE_DIR / f"eval.{lang}.json").read_text(encoding="utf-8"))
        assert len(ev) == 40 and all(set(r) >= {"id", "dataset", "instruction"} for r in ev)
    for target in PAPER:
        for pivot in ("en",) + PAPER:
            if pivot == target:
                continue
            for rec in data.load_sample(target, pivot):
                for f in data.FIELDS["plug"]:
                    assert not formats.has_header(rec[f], target=target, pivot=pivot), (rec["id"], f)
                text = formats.render_plug(rec["pivot_instruction"], rec["pivot_response"], rec["response"],
                                           target=target, pivot=pivot)
                got = formats.parse(text, target=target, pivot=pivot)
                assert (got.status, got.target, got.pivot_response) == ("ok", rec["response"], rec["pivot_response"])


def test_sample_is_package_data():
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"resources/sample/*"' in text


@pytest.mark.parametrize("fmt", spec.FORMATS)
def test_build_each_format_from_sample(fmt):
    rows, summary = data.build(target="ko", fmt=fmt, source="sample")
    assert summary["rows_in"] == summary["rows_out"] == len(rows) == 120
    assert summary["dropped"] == {}
    sample_ko = {r["id"]: r for r in _read_jsonl(data.SAMPLE_DIR / "train.ko.jsonl")}
    sample_en = {r["id"]: r for r in _read_jsonl(data.SAMPLE_DIR / "train.en.jsonl")}
    for row in rows:
        assert set(row) == {"id", "prompt", "completion", "format", "target", "pivot"}
        assert (row["format"], row["target"], row["pivot"]) == (fmt, "ko", "en")
        system, user = row["prompt"]
        assert system == {"role": "system", "content": spec.system_prompt(fmt, "ko", "en")}
        assert user == {"role": "user", "content": sample_ko[row["id"]]["instruction"]}  # target language
        [assistant] = row["completion"]
        assert assistant["role"] == "assistant"
        got = formats.parse(assistant["content"], target="ko", pivot="en", fmt=fmt)
        assert got.status == "ok"
        if fmt == "mono":
            assert assistant["content"] == sample_ko[row["id"]]["response"]
        else:
            assert got.pivot_instruction == sample_en[row["id"]]["instruction"]
            assert got.pivot_response == sample_en[row["id"]]["response"]
        if fmt == "plug":
            assert got.target == sample_ko[row["id"]]["response"]
        if fmt == "pivot_only":
            assert got.target is None and "한국어 응답" not in assistant["content"]
    chars = summary["chars"]
    assert chars["instruction"]["min"] <= chars["instruction"]["mean"] <= chars["instruction"]["max"]
    assert chars["completion"]["max"] == max(len(r["completion"][0]["content"]) for r in rows)


def test_think_no_system_non_english_pivot_and_max_samples():
    rows, summary = data.build(target="es", pivot="it", fmt="plug", source="sample", think=True, system=False,
                               max_samples=5)
    assert len(rows) == 5 and summary["limited_by_max_samples"] == 115
    for row in rows:
        assert [m["role"] for m in row["prompt"]] == ["user"]
        content = row["completion"][0]["content"]
        assert content.startswith("<think>\nIstruzione in italiano:")
        assert formats.parse(content, target="es", pivot="it").status == "ok"
    with pytest.raises(UserError, match="think"):
        data.build(target="es", fmt="mono", source="sample", think=True)


def test_mono_with_pivot_equal_target_is_allowed_but_plug_is_not():
    rows, _ = data.build(target="zh", pivot="zh", fmt="mono", source="sample", max_samples=2)
    assert len(rows) == 2
    with pytest.raises((UserError, languages.LanguageError), match="differ"):
        data.build(target="zh", pivot="zh", fmt="plug", source="sample")


def test_build_rows_library_api():
    recs = [{"id": "1", "instruction": "Ciao?", "response": "Ciao!", "pivot_instruction": "Hi?", "pivot_response": "Hi!"}]
    rows, summary = data.build_rows(recs, fmt="plug", target="it")
    assert rows[0]["completion"][0]["content"] == (
        "English instruction: Hi?\n\nEnglish response: Hi!\n\nRisposta in italiano: Ciao!")
    assert summary["rows_out"] == 1


# ----------------------------------------------------------------------------------------------
# Sources, drops and errors


def test_planted_bad_rows_are_dropped_and_counted():
    rows, summary = data.build(target="zh", fmt="plug", input=FIX / "parallel_planted.jsonl")
    assert [r["id"] for r in rows] == ["p1", "p2", "p3"]
    assert summary["rows_in"] == 7 and summary["rows_out"] == 3
    assert summary["dropped"] == {
        "empty instruction": 1,
        "duplicate id": 1,
        "text contains a PLUG header": 1,
        "empty pivot_response": 1,
    }
    assert summary["dropped_examples"]["duplicate id"] == [f"{FIX / 'parallel_planted.jsonl'}:4"]
    # mono does not need the pivot answer, so that row is kept there
    rows, summary = data.build(target="zh", fmt="mono", input=FIX / "parallel_planted.jsonl")
    assert "p6" in [r["id"] for r in rows] and "empty pivot_response" not in summary["dropped"]


def test_strict_turns_a_drop_into_an_error():
    with pytest.raises(UserError, match=r"parallel_planted.jsonl:3: empty instruction"):
        data.build(target="zh", fmt="plug", input=FIX / "parallel_planted.jsonl", strict=True)


def test_pivot_and_target_files_join_on_id():
    rows, summary = data.build(target="es", fmt="plug", pivot_file=FIX / "pivot.en.jsonl",
                               target_file=FIX / "target.es.jsonl")
    assert [r["id"] for r in rows] == ["a1", "a2", "a3"]
    assert summary["dropped"] == {
        "duplicate id in the pivot file": 1,
        "id only in the pivot file": 1,
        "id only in the target file": 1,
    }
    assert summary["rows_in"] == 6
    a2 = rows[1]
    assert a2["prompt"][1]["content"] == "Traduce la palabra.\n\nhello"  # Alpaca's input appended
    got = formats.parse(a2["completion"][0]["content"], target="es")
    assert got.pivot_instruction == "Translate the word.\n\nhello" and got.target == "Hola."
    with pytest.raises(UserError, match=r"pivot.en.jsonl:4: duplicate id in the pivot file"):
        data.build(target="es", fmt="plug", pivot_file=FIX / "pivot.en.jsonl",
                   target_file=FIX / "target.es.jsonl", strict=True)


def test_csv_input():
    rows, summary = data.build(target="it", fmt="pivot_only", input=FIX / "parallel.csv")
    assert [r["id"] for r in rows] == ["c1", "c2"]
    assert rows[0]["prompt"][-1]["content"] == "Come stai?"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input=FIX / "parallel_badjson.jsonl"), r"parallel_badjson.jsonl:3: bad JSON line"),
        (dict(input=FIX / "parallel_missing_field.jsonl"), r"parallel_missing_field.jsonl:2: missing field 'pivot_response'"),
        (dict(input=FIX / "nope.jsonl"), "file not found"),
        (dict(input=FIX / "parallel.csv", target="xx"), "unknown language code 'xx'"),
        (dict(input=FIX / "parallel.csv", fmt="both"), "unknown format"),
        (dict(), "exactly one source"),
        (dict(source="sample", input=FIX / "parallel.csv"), "exactly one source"),
        (dict(source="sample", target="de"), "no shipped sample for language 'de'"),
        (dict(pivot_file=FIX / "pivot.en.jsonl"), "go together"),
    ],
)
def test_structural_errors(kwargs, message):
    kw = dict(target="zh", fmt="plug")
    kw.update(kwargs)
    with pytest.raises((UserError, languages.LanguageError), match=message) as e:
        data.build(**kw)
    assert "\n" not in str(e.value)


def test_empty_file_and_all_rows_dropped(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="no records"):
        data.build(target="zh", input=empty)
    allbad = tmp_path / "allbad.jsonl"
    allbad.write_text(json.dumps({"id": 1, "instruction": "", "response": "x", "pivot_instruction": "y",
                                  "pivot_response": "z"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="no usable row"):
        data.build(target="zh", input=allbad)


def test_non_text_field_is_an_error(tmp_path):
    f = tmp_path / "n.jsonl"
    f.write_text(json.dumps({"id": 1, "instruction": 5, "response": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"n.jsonl:1: field 'instruction' must be text"):
        data.build(target="zh", fmt="mono", input=f)


def test_hf_dataset_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        data.build(target="zh", hf_dataset="someone/parallel-alpaca-zh", hf_split="train")
    msg = str(e.value)
    assert "someone/parallel-alpaca-zh" in msg and "--input FILE" in msg and "\n" not in msg


# ----------------------------------------------------------------------------------------------
# The command line


def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "plug_lite.data", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_cli_writes_rows_and_summary(tmp_path):
    out = tmp_path / "sub" / "zh.plug.jsonl"
    r = _cli("build", "--target", "zh", "--format", "plug", "--source", "sample", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "rows in: 120" in r.stdout and "rows out: 120" in r.stdout
    assert len(_read_jsonl(out)) == 120
    summary = json.loads(Path(str(out) + ".summary.json").read_text(encoding="utf-8"))
    assert summary["rows_out"] == 120 and summary["format"] == "plug"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_cli_reports_drops(tmp_path):
    out = tmp_path / "o.jsonl"
    r = _cli("build", "--target", "zh", "--input", FIX / "parallel_planted.jsonl", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "dropped: 4" in r.stdout and "duplicate id" in r.stdout and "text contains a PLUG header" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--input", FIX / "parallel_badjson.jsonl"], "parallel_badjson.jsonl:3"),
        (["--input", FIX / "parallel_planted.jsonl", "--strict"], "parallel_planted.jsonl:3"),
        (["--source", "sample", "--pivot", "xx"], "unknown language code 'xx'"),
    ],
)
def test_cli_errors_exit_2_one_line_nothing_written(tmp_path, args, needle):
    out = tmp_path / "o.jsonl"
    r = _cli("build", "--target", "zh", *args, "--out", out)
    assert r.returncode == 2
    assert needle in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_through_plug_lite_entry(tmp_path):
    out = tmp_path / "o.jsonl"
    r = subprocess.run([sys.executable, "-m", "plug_lite.cli", "data", "build", "--target", "it", "--format",
                        "mono", "--source", "sample", "--max-samples", "3", "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(_read_jsonl(out)) == 3


# ----------------------------------------------------------------------------------------------
# Token lengths


def test_token_stats_with_chat_template(tiny_model):
    from transformers import AutoTokenizer

    rows, summary = data.build(target="zh", fmt="plug", source="sample", max_samples=8, tokenizer=tiny_model,
                               max_length=150)
    tok = summary["tokens"]
    tk = AutoTokenizer.from_pretrained(str(tiny_model))
    lengths = [len(tk(tk.apply_chat_template(r["prompt"] + r["completion"], tokenize=False),
                      add_special_tokens=False)["input_ids"]) for r in rows]
    assert tok["total"]["max"] == max(lengths) and tok["total"]["min"] == min(lengths)
    assert tok["over_max_length"] == sum(n > 150 for n in lengths)
    assert tok["prompt"]["max"] < tok["total"]["max"]
    assert "rows over --max-length 150" in data.format_summary(summary)


def test_hf_dataset_path_with_a_local_folder(tmp_path):
    # datasets.load_dataset on a folder: the same call as for a hub name, without the network.
    (tmp_path / "train.csv").write_text((FIX / "parallel.csv").read_text(encoding="utf-8"), encoding="utf-8")
    rows, summary = data.build(target="it", fmt="plug", hf_dataset=str(tmp_path), hf_split="train")
    assert [r["id"] for r in rows] == ["c1", "c2"] and summary["source"] == f"hf:{tmp_path}[train]"
    with pytest.raises(UserError, match="split 'test'"):
        data.build(target="it", hf_dataset=str(tmp_path), hf_split="test")


def test_empty_id_is_dropped(tmp_path):
    f = tmp_path / "ids.jsonl"
    recs = [{"id": "a", "instruction": "Ciao", "response": "Ciao!"}, {"id": "", "instruction": "Ehi", "response": "Ehi!"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    rows, summary = data.build(target="it", fmt="mono", input=f)
    assert [r["id"] for r in rows] == ["a"] and summary["dropped"] == {"empty id": 1}
