"""plug-lite share: model card, Ollama Modelfile / template / params / system, and the Hub upload
(against an injected test double of HfApi: the hub is unreachable here)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from export_run import exported_chain
from plug_lite import share, templates
from plug_lite.runs import RunRecord
from plug_lite.spec import PlugSpec


@pytest.fixture(scope="session")
def chain(tmp_path_factory, tiny_model_256):
    return exported_chain(tmp_path_factory.getbasetemp() / "export_chain", tiny_model_256)


class FakeHfApi:
    """Records what would go to the Hub."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.fail = fail

    def create_repo(self, **kw):
        self.calls.append(("create_repo", kw))
        if self.fail:
            raise self.fail

    def create_commit(self, **kw):
        self.calls.append(("create_commit", kw))
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/abc"})()


def _front_matter(text: str) -> dict:
    head = text.split("---\n")[1]
    out, key = {}, None
    for line in head.splitlines():
        if line.startswith("- "):
            out[key].append(line[2:])
        else:
            key, _, val = line.partition(": ")
            key = key.rstrip(":")
            out[key] = val if val else []
    return out


def test_dry_run_writes_card_and_ollama_files(chain, tmp_path, capsys):
    run, out, report = chain
    (tmp_path / "eval.json").write_text(json.dumps({"win_rate": {"plug_vs_mono": 0.625}, "n": 80}))
    rc = share.cli([str(run), "--out-dir", str(tmp_path / "share"), "--push", "me/plug-zh", "--dry-run",
                    "--license", "apache-2.0", "--eval-report", str(tmp_path / "eval.json")])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "would upload to https://huggingface.co/me/plug-zh" in stdout
    for name in ("Qwen2-Tiny-40M-PLUG-zh-Q4_K_M.gguf", "Qwen2-Tiny-40M-PLUG-zh-LoRA-F16.gguf", "README.md", "Modelfile", "template", "params"):
        assert name in stdout
    d = tmp_path / "share"
    card = (d / "README.md").read_text(encoding="utf-8")
    fm = _front_matter(card)
    assert fm["language"] == ["zh", "en"] and fm["license"] == "apache-2.0"
    assert fm["tags"] == ["gguf", "llama-cpp", "plug"] and fm["pipeline_tag"] == "text-generation"
    assert "base_model" not in fm  # a local path is not a Hub id
    assert "| `Qwen2-Tiny-40M-PLUG-zh-Q4_K_M.gguf` | Q4_K_M |" in card
    assert "LoRA adapter (F16)" in card and "untuned base" in card
    # the file the card and Ollama point at: the smallest within export's --max-drift
    drift = report["verify"]["drift"]
    main_q = drift["recommended"]
    main = "Qwen2-Tiny-40M-PLUG-zh-" + main_q + ".gguf"
    assert f"ollama run hf.co/me/plug-zh:{main_q}" in card and f"recommended: {main}" in stdout
    assert "## How far each file drifts from the F16" in card and f"| {main_q} (recommended) |" in card
    for q, f in drift["files"].items():
        assert f"{f['languages']['zh']['kl_mean']:.3f} / " in card  # each file's target-language KL
    assert "中文回复" in card  # the PLUG example rendered by formats.render
    assert "plug_vs_mono | 0.625" in card and "CC BY-NC" in card
    assert "| backend | cpu |" in card
    modelfile = (d / "Modelfile").read_text(encoding="utf-8")
    assert modelfile.startswith(f"FROM ./{main}\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and share.GO_TEMPLATES["chatml"] in modelfile
    assert (d / "template").read_text() == share.GO_TEMPLATES["chatml"]
    assert json.loads((d / "params").read_text())["stop"] == ["<|im_end|>"]
    assert "Chinese" in (d / "system").read_text() and "中文回复" in (d / "system").read_text()


def test_push_with_test_double(chain, tmp_path, monkeypatch, capsys):
    run, out, _ = chain
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123456")
    api = FakeHfApi()
    result = share.main(run, out_dir=tmp_path / "share", push="me/plug-zh", api=api)
    assert [c[0] for c in api.calls] == ["create_repo", "create_commit"]
    assert api.calls[0][1]["repo_id"] == "me/plug-zh" and api.calls[0][1]["exist_ok"] is True
    commit = api.calls[1][1]
    assert commit["token"] == "hf_secret_token_123456"
    names = sorted(op.path_in_repo for op in commit["operations"])
    assert names == sorted(["Qwen2-Tiny-40M-PLUG-zh-F16.gguf", "Qwen2-Tiny-40M-PLUG-zh-Q8_0.gguf",
                            "Qwen2-Tiny-40M-PLUG-zh-Q4_K_M.gguf", "Qwen2-Tiny-40M-PLUG-zh-LoRA-F16.gguf",
                            "Qwen2-Tiny-40M-F16.gguf", "README.md", "Modelfile", "template", "params", "system"])
    assert result["url"].endswith("/commit/abc")
    printed = capsys.readouterr()
    assert "hf_secret_token_123456" not in printed.out + printed.err
    for f in (tmp_path / "share").iterdir():
        assert "hf_secret_token_123456" not in f.read_text(encoding="utf-8")


def test_push_errors_are_one_line_without_token(chain, tmp_path, monkeypatch):
    run, _, _ = chain
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123456")
    api = FakeHfApi(fail=RuntimeError("401 Unauthorized for token hf_secret_token_123456\nmore"))
    with pytest.raises(share.UserError) as e:
        share.main(run, out_dir=tmp_path / "s", push="me/plug-zh", api=api)
    msg = str(e.value)
    assert msg.startswith("upload to me/plug-zh failed: 401 Unauthorized") and "\n" not in msg
    assert "hf_secret_token_123456" not in msg


def test_no_token(chain, tmp_path, monkeypatch):
    run, _, _ = chain
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached login
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    api = FakeHfApi()
    with pytest.raises(share.UserError, match="HF_TOKEN"):
        share.main(run, out_dir=tmp_path / "s", push="me/plug-zh", api=api)
    assert api.calls == []


def test_gguf_folder_without_run_metadata(chain, tmp_path, capsys):
    """A folder of GGUF files alone: format and languages come from the plug.* keys."""
    _, out, _ = chain
    folder = tmp_path / "g"
    folder.mkdir()
    shutil.copy(out / "Qwen2-Tiny-40M-PLUG-zh-Q8_0.gguf", folder)
    assert share.cli([str(folder)]) == 0
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert "| `Qwen2-Tiny-40M-PLUG-zh-Q8_0.gguf` | Q8_0 |" in card and "Not recorded" in card
    assert (folder / "Modelfile").read_text().startswith("FROM ./Qwen2-Tiny-40M-PLUG-zh-Q8_0.gguf")
    assert (folder / "template").is_file()  # chatml recognised from the GGUF's template


def test_untranslatable_template_says_so(tmp_path):
    run = RunRecord(PlugSpec("plug", "ko", "en"), chat_template_name=None, eos_token="</s>")
    files = share.ollama_files(run, "m.gguf")
    assert "template" not in files
    assert "cannot be translated" in files["Modelfile"]
    assert json.loads(files["params"])["stop"] == ["</s>"]


def test_bad_input(tmp_path, capsys):
    assert share.cli([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert share.cli([str(tmp_path / "empty")]) == 2
    assert "no .gguf files" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("go") is None, reason="needs the Go toolchain to run text/template")
@pytest.mark.parametrize("name", ["chatml", "gemma"])
def test_go_templates_render_like_the_jinja_ones(name, tmp_path):
    """Ollama renders templates with Go's text/template; the result must equal plug_lite's Jinja."""
    import jinja2

    (tmp_path / "main.go").write_text(
        'package main\nimport ("encoding/json"; "os"; "text/template")\n'
        'type M struct { Role string `json:"role"`; Content string `json:"content"` }\n'
        "func main() { var ms []M; json.Unmarshal([]byte(os.Args[2]), &ms); b, _ := os.ReadFile(os.Args[1])\n"
        ' t := template.Must(template.New("t").Parse(string(b)))\n'
        ' if err := t.Execute(os.Stdout, map[string]any{"Messages": ms}); err != nil { panic(err) } }\n')
    (tmp_path / "t.tmpl").write_text(share.GO_TEMPLATES[name])
    build = subprocess.run(["go", "build", "-o", str(tmp_path / "render"), str(tmp_path / "main.go")],
                           capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ, "GOCACHE": str(tmp_path / "gocache"), "GO111MODULE": "off"})
    assert build.returncode == 0, build.stderr
    conversations = [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"}],
        [{"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
        [{"role": "user", "content": "only a user turn"}],
    ]
    for conv in conversations:
        want = jinja2.Environment().from_string(templates.get(name)).render(messages=conv, add_generation_prompt=True, bos_token="")
        got = subprocess.run([str(tmp_path / "render"), str(tmp_path / "t.tmpl"), json.dumps(conv)], capture_output=True, text=True)
        assert got.returncode == 0 and got.stdout == want
