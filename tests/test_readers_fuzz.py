"""Every reader of a user's file, fed random bytes and random JSON: it returns records or raises a
one-line user error (UserError / LanguageError), never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plug_lite import data, evalsets, formats, gguf_meta, io, judge, languages, llm, llm_batch, metrics, reporting

#: Field names the readers look for, so random records hit the code paths that read them.
FIELDS = ["id", "instruction", "response", "answer", "output", "input", "target", "lang", "format", "pivot",
          "pivot_instruction", "pivot_response", "target_response", "status", "finish_reason", "key", "mode",
          "aggregate", "files", "question", "correct_answers", "incorrect_answers", "best_answer", "Question",
          "Body", "Answer", "answer_number", "category", "name", "system_prompt", "prompt_template",
          "output_format", "code", "instruction_header", "response_header", "Best Answer", "Correct Answers",
          "custom_id", "response", "error", "status_code", "body", "choices", "message", "content", "usage"]

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                           max_size=3), max_leaves=8)
records = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), values, max_size=7)
json_docs = st.lists(records, max_size=4) | values | records


def _layouts(doc) -> list[str]:
    """The same value as one JSON document and, when it is a list, as JSON lines."""
    out = [json.dumps(doc, ensure_ascii=False)]
    if isinstance(doc, list):
        out.append("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in doc))
    return out


def _readers(path: Path) -> dict:
    """name -> a call reading ``path`` the way a verb does."""
    target = "zh"
    return {
        "read_records": lambda: io.read_records(path),
        "read_json": lambda: io.read_json(path),
        "read_jsonl_resumable": lambda: io.read_jsonl_resumable(path),
        "call_cache": lambda: llm.CallCache(path).close(),
        "eval_set": lambda: evalsets.load_eval_set(path, target),
        "data_build": lambda: data.build(target=target, fmt="plug", input=path),
        "data_build_joined": lambda: data.build(target=target, fmt="plug", pivot_file=path, target_file=path),
        "judge_answers": lambda: judge._read_answers(str(path)),
        "judge_prompts": lambda: judge.load_prompt_file(str(path), "pairwise"),
        "judge_results": lambda: reporting.load_results([str(path)]),
        "offline_metrics": lambda: metrics.offline_metrics([formats.upgrade_answer(r) for r in io.read_records(path)],
                                                           target),
        "languages_file": lambda: languages.load_file(path),
        "gguf": lambda: gguf_meta.check(path),
        "batch_results": lambda: _batch_results(path),
    }


class _AnyCall(dict):
    """Every custom_id is a call the job needs (so random result lines reach the cache)."""

    def get(self, key, default=None):
        return llm_batch.Call(key, {"model": "m"})


def _batch_results(path: Path) -> None:
    cache = llm.CallCache(path.with_name("ingested.cache.jsonl"))
    try:
        llm_batch.ingest_files([str(path)], cache, _AnyCall())
    finally:
        cache.close()
    llm.CallCache(path.with_name("ingested.cache.jsonl")).close()  # and what it wrote reads back


READERS = list(_readers(Path("x")))
SUFFIXES = [".jsonl", ".json", ".csv", ".tsv", ".gguf"]


def _expect_record_or_one_line(call) -> None:
    try:
        call()
    except (io.UserError, languages.LanguageError) as e:
        assert "\n" not in str(e) and str(e).strip(), repr(str(e))


SETTINGS = settings(max_examples=int(__import__("os").environ.get("PLUG_HYP_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("reader", READERS)
@SETTINGS
@given(blob=st.binary(max_size=200), suffix=st.sampled_from(SUFFIXES), magic=st.booleans())
def test_random_bytes(reader, blob, suffix, magic):
    with tempfile.TemporaryDirectory() as d:
        # names that make the evaluation-set loader expect TruthfulQA / SVAMP fields, sometimes
        path = Path(d) / (("truthful" if len(blob) % 3 == 0 else "svamp" if len(blob) % 3 == 1 else "set") + suffix)
        path.write_bytes((gguf_meta.MAGIC if magic else b"") + blob)
        _expect_record_or_one_line(_readers(path)[reader])


@pytest.mark.parametrize("reader", READERS)
@SETTINGS
@given(doc=json_docs, suffix=st.sampled_from([".jsonl", ".json"]), name=st.sampled_from(["set", "truthful", "svamp"]))
def test_random_json(reader, doc, suffix, name):
    with tempfile.TemporaryDirectory() as d:
        for text in _layouts(doc):
            path = Path(d) / (name + suffix)
            path.write_text(text, encoding="utf-8")
            _expect_record_or_one_line(_readers(path)[reader])
