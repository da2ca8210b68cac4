"""Language registry: the paper's headers, registration, files, errors; stdlib-only imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plug_lite import formats, languages, spec
from plug_lite.languages import Language, LanguageError

REPO = Path(__file__).resolve().parents[1]


def test_paper_response_headers_exact():
    expected = {
        "en": "English response:",
        "zh": "中文回复：",
        "ko": "한국어 응답:",
        "it": "Risposta in italiano:",
        "es": "Respuesta en español:",
    }
    for code, header in expected.items():
        assert languages.get(code).response_header == header


def test_at_least_fifteen_languages_with_distinct_headers():
    codes = languages.codes()
    assert len(codes) >= 15
    headers = [h for c in codes for h in (languages.get(c).response_header, languages.get(c).instruction_header)]
    assert len(headers) == len(set(headers))


def test_every_pair_renders_and_parses():
    for target in languages.codes():
        for pivot in ("en", "zh"):
            if pivot == target:
                continue
            text = formats.render_plug("q", "a", "t", target=target, pivot=pivot)
            assert formats.parse(text, target=target, pivot=pivot).target == "t"


def test_get_is_case_insensitive_and_unknown_is_one_line():
    assert languages.get(" ZH ").code == "zh"
    with pytest.raises(LanguageError) as e:
        languages.get("xx")
    assert "\n" not in str(e.value) and "'xx'" in str(e.value) and "zh" in str(e.value)


def test_system_prompts():
    p = spec.system_prompt("plug", "ko", "en")
    assert "Korean" in p and "English instruction:" in p and "한국어 응답:" in p
    assert "Korean" in spec.system_prompt("mono", "ko")
    assert "English response:" in spec.system_prompt("pivot_only", "ko")
    with pytest.raises(LanguageError):
        spec.system_prompt("plug", "ko", "ko")
    with pytest.raises(LanguageError):
        spec.system_prompt("weird", "ko")


def _cleanup(code):
    languages._REGISTRY.pop(code, None)
    formats._header_table.cache_clear()


def test_register_new_language_and_use_it():
    lang = Language("xq", "Testish", "Testisch", "Testisch Antwort:", "Testisch Frage:")
    try:
        languages.register(lang)
        assert languages.get("xq") is lang
        languages.register(lang)  # same definition again: fine
        text = formats.render_plug("q", "a", "t", target="xq")
        assert text.endswith("Testisch Antwort: t")
        assert formats.parse(text, target="xq").status == "ok"
        with pytest.raises(LanguageError, match="already registered"):
            languages.register(Language("xq", "Other", "O", "O answer:", "O question:"))
        languages.register(Language("xq", "Other", "O", "O answer:", "O question:"), replace=True)
        assert languages.get("xq").name == "Other"
    finally:
        _cleanup("xq")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(response_header="No colon"), "must end with"),
        (dict(response_header=""), "non-empty"),
        (dict(instruction_header="two\nlines:"), "one line"),
        (dict(instruction_header="Same:", response_header="Same:"), "must differ"),
    ],
)
def test_bad_language_definitions(kwargs, message):
    base = dict(code="xr", name="R", native="R", response_header="R answer:", instruction_header="R question:")
    base.update(kwargs)
    with pytest.raises(LanguageError, match=message):
        Language(**base)


def test_register_rejects_header_clash_and_bad_code():
    with pytest.raises(LanguageError, match="already used"):
        languages.register(Language("xs", "S", "S", "English response:", "S question:"))
    with pytest.raises(LanguageError, match="lower-case"):
        languages.register(Language("XS", "S", "S", "S answer:", "S question:"))
    assert "xs" not in languages.codes()


def test_load_file(tmp_path):
    f = tmp_path / "langs.json"
    f.write_text(json.dumps([{"code": "xt", "name": "T", "native": "T", "response_header": "T answer:",
                              "instruction_header": "T question:"}]), encoding="utf-8")
    try:
        got = languages.load_file(f)
        assert [g.code for g in got] == ["xt"] and languages.get("xt").name == "T"
    finally:
        _cleanup("xt")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('"a string"', "expected a list"),
        ('[{"code": "xu"}]', "missing field 'name'"),
        ('[{"code": "xu", "name": "U", "native": "U", "response_header": "U a:", "instruction_header": "U q:", "colour": 1}]',
         "unknown field 'colour'"),
        ('[{"code": "xu", "name": "U", "native": "U", "response_header": "U a", "instruction_header": "U q:"}]',
         "record 0"),
    ],
)
def test_load_file_errors(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(LanguageError, match=message) as e:
        languages.load_file(f)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    assert "xu" not in languages.codes()
    with pytest.raises(LanguageError, match="not found"):
        languages.load_file(tmp_path / "missing.json")


def _run(code: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PLUG_LITE_LANGUAGES")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def test_env_var_loads_languages_on_import(tmp_path):
    f = tmp_path / "langs.json"
    f.write_text(json.dumps({"code": "xv", "name": "V", "native": "V", "response_header": "V answer:",
                             "instruction_header": "V question:"}), encoding="utf-8")
    r = _run("from plug_lite import languages; print(languages.get('xv').response_header)",
             {"PLUG_LITE_LANGUAGES": str(f)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "V answer:"


BLOCKED = ["torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes", "llama_cpp",
           "openai", "matplotlib", "numpy", "safetensors", "tokenizers", "huggingface_hub", "gguf", "unsloth", "tqdm"]


def test_core_imports_with_only_the_standard_library():
    # -S: no site-packages at all; a meta-path finder also refuses the heavy names outright.
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        BLOCKED = {BLOCKED!r}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked: " + name)
                return None
        sys.meta_path.insert(0, Block())
        import plug_lite, plug_lite.formats, plug_lite.languages, plug_lite.data, plug_lite.evalsets, plug_lite.extract
        import plug_lite.io
        rows, summary = plug_lite.data.build(target="zh", fmt="plug", source="sample")
        assert summary["rows_out"] == 120, summary
        assert plug_lite.evalsets.load_eval_set("sample", "it", limit=3)[0]["lang"] == "it"
        print("ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """)
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok []"
