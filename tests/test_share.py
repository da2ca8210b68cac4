"""plug-lite share: model card, Ollama Modelfile / template / params / system, and the Hub upload
(against an injected test double of HfApi: the hub is unreachable here)."""

from __future__ import annotations

import json
import shutil

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
    # the file the card and Ollama point at: the smallest within export's --max-drift that kept the fine-tune
    drift = report["verify"]["drift"]
    best = share.recommended(share.collect(run))
    main_q = best.stem.rsplit("-", 1)[-1]
    within = {q for q, f in drift["files"].items() if f["languages"]["zh"]["kl_mean"] <= drift["max_drift"]}
    if within:  # the smallest quantized file within the threshold (none lost the fine-tune here), never the F16
        assert main_q in within and all(drift["files"][q]["bytes"] >= drift["files"][main_q]["bytes"] for q in within)
    else:  # no quantized file qualifies: the reference
        assert main_q == drift["reference"]
    main = best.name
    assert f"ollama run hf.co/me/plug-zh:{main_q}" in card and f"llama-cli -m {main}" in card
    assert "## How far each file drifts from the F16" in card
    for q, f in drift["files"].items():
        assert f"{f['languages']['zh']['kl_mean']:.3f} / " in card  # each file's target-language KL
    assert "中文回复" in card  # the PLUG example rendered by formats.render
    assert "plug_vs_mono | 0.625" in card and "CC BY-NC" in card
    assert "| backend | cpu |" in card
    modelfile = (d / "Modelfile").read_text(encoding="utf-8")
    assert modelfile.startswith(f"FROM ./{main}\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and templates.GO["chatml"] in modelfile
    assert (d / "template").read_text() == templates.GO["chatml"]
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


def test_gguf_folder_of_several_models_is_refused_and_the_base_is_not_the_model(chain, tmp_path, capsys):
    """export's default gguf/ holds every run's files: a folder with a PLUG and a Mono model is
    refused (one card and one upload would mix them; the Modelfile named the Mono file), and a
    folder of one export with --with-base reads the PLUG keys from a PLUG file, not the base."""
    from plug_lite import gguf_meta

    _, out, _ = chain
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(out / "Qwen2-Tiny-40M-PLUG-zh-Q8_0.gguf", mixed)
    gguf_meta.write_keys(out / "Qwen2-Tiny-40M-PLUG-zh-Q8_0.gguf", mixed / "Qwen2-Tiny-40M-Mono-zh-Q4_K_M.gguf",
                         {**PlugSpec("mono", "zh").gguf_fields(), "general.name": "Qwen2-Tiny-40M-Mono-zh-F16"})
    assert share.cli([str(mixed), "--out-dir", str(tmp_path / "s1")]) == 2
    err = capsys.readouterr().err
    assert "2 different models" in err and "Mono-zh-Q4_K_M" in err and "PLUG-zh-Q8_0" in err
    assert not (tmp_path / "s1").exists()

    one = tmp_path / "one"
    shutil.copytree(out, one)
    (one / "imatrix.gguf").write_bytes((out / "Qwen2-Tiny-40M-F16.gguf").read_bytes())  # no PLUG keys, no adapter of its own
    gguf_meta.write_keys(one / "imatrix.gguf", one / "imatrix.gguf", {"general.type": "imatrix"})
    assert share.cli([str(one), "--out-dir", str(tmp_path / "s2"), "--push", "me/x", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "imatrix.gguf" not in captured.out and "left out imatrix.gguf" in captured.err
    card = (tmp_path / "s2" / "README.md").read_text(encoding="utf-8")
    assert "| `Qwen2-Tiny-40M-F16.gguf` | F16, untuned base (for the LoRA) |" in card
    assert "— PLUG (Chinese) GGUF" in card
    assert (tmp_path / "s2" / "Modelfile").read_text().startswith("FROM ./Qwen2-Tiny-40M-PLUG-zh-")


def test_a_failed_export_is_not_shared(chain, tmp_path, capsys):
    """A failed export keeps no file but records its files' final names with the error: files of an
    earlier export under those names were shared as this one (a card without its checks)."""
    import dataclasses

    from plug_lite.runs import ExportRecord, ParityReport

    run, _, _ = chain
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("plug_run.json", "export_report.json"):
        shutil.copy(run / name, copy)
    report = ExportRecord.load(copy)
    assert all(f.path.is_file() for f in report.files.values())  # an earlier export's files are there
    dataclasses.replace(report, verify=ParityReport(error="Q4_K_M: target-language (zh) mean KL 0.002 exceeds "
                                                          "--max-drift 0 (--strict-drift)")).save()
    assert share.cli([str(copy), "--out-dir", str(tmp_path / "s"), "--push", "me/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "failed its check" in err and "--strict-drift" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_a_file_another_export_replaced_is_not_shared(chain, tmp_path, capsys):
    """Two runs exported under the same names: the second replaced the first's files, so sharing
    the first would publish the second's weights under the first's card; refused, naming the file."""
    import dataclasses

    from plug_lite import gguf_meta
    from plug_lite.runs import ExportRecord
    from plug_lite.spec import EXPORT_KEY

    run, _, _ = chain
    copy, files = tmp_path / "run", tmp_path / "gguf"
    copy.mkdir(), files.mkdir()
    shutil.copy(run / "plug_run.json", copy)
    report = ExportRecord.load(run)
    moved = {k: dataclasses.replace(f, path=files / f.path.name) for k, f in report.files.items()}
    for old, new in zip(report.files.values(), moved.values()):
        shutil.copy(old.path, new.path)
    for f in (report.adapter_gguf, report.base_gguf):
        shutil.copy(f, files / f.name)
    dataclasses.replace(report, files=moved, adapter_gguf=files / report.adapter_gguf.name,
                        base_gguf=files / report.base_gguf.name, folder=copy).save()
    assert share.cli([str(copy), "--out-dir", str(tmp_path / "ok"), "--push", "me/x", "--dry-run"]) == 0
    capsys.readouterr()
    q8 = moved["Q8_0"].path
    gguf_meta.write_keys(q8, q8, {EXPORT_KEY: "another-run-0000"})  # what a second run's export leaves
    assert share.cli([str(copy), "--out-dir", str(tmp_path / "s"), "--push", "me/x", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{q8}: another export replaced it" in err and "another-run-0000" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


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


# --------------------------------------------------------------------------------------------
# Which file Ollama runs, its stops, and the Go template of a base model's own template


def _shared(tmp_path, sizes: dict[str, int], greedy: dict | None = None) -> share.Shared:
    from plug_lite.runs import ExportedFile, ExportRecord, GreedyScore, ParityReport

    files = []
    for quant, size in sizes.items():
        f = tmp_path / f"M-PLUG-zh-{quant}.gguf"
        f.write_bytes(b"\0" * size)
        files.append(f)
    verify = ParityReport(greedy={q: GreedyScore(0, 3, m, b) for q, (m, b) in greedy.items()}) if greedy else None
    export = ExportRecord(files={q: ExportedFile(f, f.stat().st_size) for q, f in zip(sizes, files)}, verify=verify)
    run = RunRecord(PlugSpec("plug", "zh"), chat_template_name="chatml", eos_token="<|im_end|>")
    return share.Shared(run=run, files=files, labels={f.name: q for q, f in zip(sizes, files)}, export=export,
                        dir=tmp_path, default_out=tmp_path)


def test_recommended_is_the_smallest_quant_that_kept_the_fine_tune(tmp_path):
    sizes = {"F16": 400, "Q8_0": 200, "Q4_K_M": 100}
    assert share.recommended(_shared(tmp_path, sizes)).name == "M-PLUG-zh-Q4_K_M.gguf"
    # Q4_K_M answers more like the untuned base than the merged model: Q8_0
    erased = {"Q8_0": (0.9, 0.1), "Q4_K_M": (0.2, 0.6)}
    assert share.recommended(_shared(tmp_path, sizes, erased)).name == "M-PLUG-zh-Q8_0.gguf"
    # no quantized file kept it: the reference
    assert share.recommended(_shared(tmp_path, sizes, {"Q8_0": (0.1, 0.5), "Q4_K_M": (0.2, 0.6)})).name == "M-PLUG-zh-F16.gguf"
    assert share.recommended(_shared(tmp_path, {"F16": 400})).name == "M-PLUG-zh-F16.gguf"


def test_stops_hold_every_end_token_seen(tmp_path):
    from plug_lite.runs import ParityReport, StopCount

    run = RunRecord(PlugSpec("plug", "zh"), chat_template_name="gemma", eos_token="<end_of_turn>")
    stops = ParityReport(stops={"merged": StopCount(3, 3, 256, ends=["<end_of_turn>"]),
                                "Q8_0": StopCount(3, 3, 256, ends=["<end_of_turn>", "<eos>"])})
    from plug_lite.runs import ExportRecord

    ends = share.end_tokens(ExportRecord(files={}, verify=stops))
    assert ends == ["<end_of_turn>", "<eos>"]
    files = share.ollama_files(run, "m.gguf", ends=ends)
    assert json.loads(files["params"])["stop"] == ["<end_of_turn>", "<eos>"]
    assert files["Modelfile"].count("PARAMETER stop") == 2


@pytest.mark.parametrize("real, family", [("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3.1"),
                                          ("microsoft-Phi-3.5-mini-instruct.jinja", "phi3"),
                                          ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral")])
def test_a_base_models_own_template_gets_its_familys_go_template(chain, tmp_path, real_templates, real, family):
    """A GGUF folder whose template is a base model's own (with the PLUG default system prompt in
    front, as export writes it) gets the Go template and stop of that template's family."""
    from plug_lite.gguf_meta import write_plug_metadata

    _, out, _ = chain
    folder = tmp_path / "g"
    folder.mkdir()
    spec = PlugSpec("plug", "zh")
    template = templates.with_default_system(real_templates[real], spec.system_prompt())
    write_plug_metadata(out / "Qwen2-Tiny-40M-PLUG-zh-Q8_0.gguf", folder / "M-PLUG-zh-Q8_0.gguf", spec,
                        chat_template=template)
    assert share.cli([str(folder)]) == 0
    assert (folder / "template").read_text() == templates.GO[family]
    assert json.loads((folder / "params").read_text())["stop"][0] == templates.STOP[family]
