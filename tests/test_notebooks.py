"""The five notebooks: each ``.ipynb`` is its ``.py`` pair (jupytext) with no outputs, and all five
run headless, chained in order in one work folder, with a tiny parameter set injected after
their ``parameters`` cell (papermill's convention): a tiny random Qwen2, a few steps, the
``cpu-tiny`` preset, the shipped sample data and a local scripted judge server.

The notebooks are executed with nbclient on an ipykernel running this interpreter.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NB_DIR = REPO / "notebooks"
NOTEBOOKS = [
    "01_build_plug_data",
    "02_train_qlora",
    "03_export_gguf",
    "04_chat_local",
    "05_eval_x_alpacaeval",
]
KERNEL = "plug-lite-tests"


# --------------------------------------------------------------------------- pairing


def _cells(nb) -> list[tuple[str, str, tuple]]:
    out = []
    for c in nb.cells:
        tags = tuple(sorted(c.get("metadata", {}).get("tags", [])))
        out.append((c.cell_type, c.source.strip(), tags))
    return out


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_is_the_py_pair_without_outputs(name):
    import jupytext
    import nbformat

    py, ipynb = NB_DIR / f"{name}.py", NB_DIR / f"{name}.ipynb"
    assert py.exists() and ipynb.exists(), f"{name}: both the .py and the .ipynb must exist"
    from_py = jupytext.read(py)
    raw = nbformat.read(ipynb, as_version=4)
    assert _cells(from_py) == _cells(raw), f"{name}: .ipynb and .py differ: run `jupytext --to ipynb notebooks/{name}.py`"
    for c in raw.cells:
        if c.cell_type == "code":
            assert c.outputs == [], f"{name}: a cell has saved outputs"
            assert c.execution_count is None, f"{name}: a cell has an execution count"
    # The Colab badge opens this very notebook; the install cell comes before the parameters.
    first = raw.cells[0]
    assert first.cell_type == "markdown" and "colab.research.google.com/assets/colab-badge.svg" in first.source
    assert f"/blob/main/notebooks/{name}.ipynb" in first.source
    kinds = [("parameters" in c.metadata.get("tags", [])) for c in raw.cells]
    assert kinds.count(True) == 1, f"{name}: exactly one cell must be tagged 'parameters'"
    code = [c for c in raw.cells if c.cell_type == "code"]
    assert "ensure_installed" in code[0].source and "parameters" in code[1].metadata.get("tags", [])
    text = ipynb.read_text(encoding="utf-8")
    for marker in ("sk-", "hf_"):  # no key-looking strings saved
        assert not any(tok.startswith(marker) and len(tok) > 20 for tok in text.replace('"', " ").split())


def test_notebook_pins_match_constraints():
    from plug_lite.notebook import PINS

    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            k, v = line.split("==", 1)
            pinned[k.strip().lower()] = v.strip()
    for pkg, ver in PINS.items():
        assert pinned.get(pkg) == ver, f"notebook pin {pkg}=={ver} differs from constraints.txt ({pinned.get(pkg)})"


# --------------------------------------------------------------------------- execution


def _parameter_names(source: str) -> set[str]:
    names = set()
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                names.add(t.id)
    return names


def inject_parameters(nb, params: dict):
    """Insert a cell tagged ``injected-parameters`` after the ``parameters`` cell (papermill's
    convention). Every injected name must exist in the parameters cell."""
    import nbformat

    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    unknown = set(params) - _parameter_names(nb.cells[idx].source)
    assert not unknown, f"parameters not in the notebook's parameters cell: {sorted(unknown)}"
    source = "# Parameters injected by tests/test_notebooks.py\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(idx + 1, cell)
    return nb


@pytest.fixture(scope="session")
def kernel_name() -> str:
    """A kernelspec of its own that runs this interpreter, installed into its prefix (idempotent;
    a user-level ``python3`` spec pointing elsewhere cannot shadow it)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        exe = KernelSpecManager().get_kernel_spec(KERNEL).argv[0]
        ok = Path(exe).resolve() == Path(sys.executable).resolve()
    except NoSuchKernel:
        ok = False
    if not ok:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL,
                        "--display-name", "plug-lite tests"], check=True, capture_output=True)
    return KERNEL


@pytest.fixture(scope="session")
def judge_server():
    """A local OpenAI-compatible server that answers judge prompts (tests/scripted_openai.py)."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from scripted_openai import ScriptedOpenAI, verdict_reply  # owned by the judge tests
    finally:
        sys.path.pop(0)
    # One reply parses as a pairwise verdict and as a truthful / informative label.
    with ScriptedOpenAI(verdict_reply("Verdict: [[A]]. Labels: [[T]] [[I]]")) as server:
        yield server


@pytest.fixture(scope="session")
def chain(tmp_path_factory, tiny_model, kernel_name):
    """State shared by the chained notebook runs: the work folder and who has passed."""
    work = tmp_path_factory.mktemp("notebooks")
    # Local stand-ins for X-TruthfulQA / X-SVAMP (the hub is not reachable in tests), same schema.
    (work / "truthfulqa_zh.json").write_text(json.dumps([
        {"id": "t1", "instruction": "太阳从哪边升起？", "correct_answers": ["东边"], "incorrect_answers": ["西边"]},
        {"id": "t2", "instruction": "水在海平面多少度沸腾？", "correct_answers": ["100摄氏度"], "incorrect_answers": ["50摄氏度"]},
    ], ensure_ascii=False), encoding="utf-8")
    (work / "svamp_zh.json").write_text(json.dumps([
        {"id": "s1", "instruction": "小明有3个苹果，又买了4个。他现在有几个苹果？", "answer": 7},
        {"id": "s2", "instruction": "一本书有10页，读了6页，还剩几页？", "answer": 4},
    ], ensure_ascii=False), encoding="utf-8")
    return {"work": work, "passed": set(), "times": {}}


def tiny_params(name: str, work: Path, model: Path, judge: str | None) -> dict:
    common = {"WORK_DIR": str(work / "plug_work"), "TARGET": "zh", "PIVOT": "en"}
    per = {
        "01_build_plug_data": {"SOURCE": "sample", "LIMIT": 8, "FORMATS": ["plug", "mono"]},
        "02_train_qlora": {"MODEL": str(model), "PRESET": "cpu-tiny", "MAX_STEPS": 2,
                           "FORMATS": ["plug", "mono"], "BACKEND": "auto"},
        "03_export_gguf": {"FORMATS": ["plug", "mono"], "QUANTS": ["Q8_0"], "ADAPTER_GGUF": False,
                           "PARITY_PROMPTS": 1, "PUSH": False},
        "04_chat_local": {"FORMAT": "plug", "MAX_TOKENS": 24, "N_GPU_LAYERS": 0},
        "05_eval_x_alpacaeval": {"EVAL_SET": "sample", "LIMIT": 3, "MAX_TOKENS": 24,
                                 "JUDGE_MODEL": "scripted-judge", "JUDGE_BASE_URL": judge,
                                 "RUN_TRUTHFULQA": True, "TRUTHFULQA_SET": str(work / "truthfulqa_zh.json"),
                                 "RUN_SVAMP": True, "SVAMP_SET": str(work / "svamp_zh.json")},
    }[name]
    if name in ("04_chat_local", "05_eval_x_alpacaeval"):
        common.pop("PIVOT")  # read from the GGUF
    return {**common, **per}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, chain, tiny_model, kernel_name, request, monkeypatch):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    i = NOTEBOOKS.index(name)
    for prev in NOTEBOOKS[:i]:
        if prev not in chain["passed"]:
            pytest.skip(f"{prev} did not run")
    server = request.getfixturevalue("judge_server") if name.startswith("05") else None
    judge = server.url if server else None
    # The judge key comes from the environment, as on a machine without Colab secrets.
    monkeypatch.setenv("OPENAI_API_KEY", "scripted-test-key-not-secret")
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    inject_parameters(nb, tiny_params(name, chain["work"], tiny_model, judge))
    client = NotebookClient(nb, timeout=240, kernel_name=kernel_name,
                            resources={"metadata": {"path": str(chain["work"])}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{name}: a cell failed:\n{str(e)[-4000:]}")
    finally:
        out = chain["work"] / "executed" / f"{name}.ipynb"
        out.parent.mkdir(exist_ok=True)
        nbformat.write(nb, out)
    chain["times"][name] = time.perf_counter() - t0
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors
    chain["passed"].add(name)
    _check_outputs(name, chain["work"] / "plug_work", nb)
    if server is not None:  # 3 pairs in both orders + 2 truthful labels per model, key from the environment
        assert server.calls == 6 + 2 * 2
        assert set(server.auth_headers) == {"Bearer scripted-test-key-not-secret"}


def _execute(name: str, chain: dict, kernel_name: str, judge: str | None, model: Path):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    inject_parameters(nb, tiny_params(name, chain["work"], model, judge))
    try:
        NotebookClient(nb, timeout=240, kernel_name=kernel_name,
                       resources={"metadata": {"path": str(chain["work"])}}).execute()
    except CellExecutionError as e:
        pytest.fail(f"{name} (re-run): a cell failed:\n{str(e)[-4000:]}")
    return nb


def test_rerun_resumes_instead_of_redoing(chain, tiny_model, kernel_name, request, monkeypatch):
    """Running 02, 03 and 05 again (a Colab disconnect) reuses what is on disk: no training, no
    export, no new answers, no new judge calls."""
    if set(NOTEBOOKS) - chain["passed"]:
        pytest.skip("the chained run did not pass")
    monkeypatch.setenv("OPENAI_API_KEY", "scripted-test-key-not-secret")
    server = request.getfixturevalue("judge_server")
    work = chain["work"] / "plug_work"
    watched = [work / "runs" / "plug-zh" / "adapter" / "adapter_model.safetensors",
               work / "eval" / "zh" / "alpacaeval.plug.jsonl",
               *(work / "gguf").glob("*.gguf")]
    before = {p: p.stat().st_mtime_ns for p in watched}
    calls = server.calls
    assert "finished already" in _text(_execute("02_train_qlora", chain, kernel_name, None, tiny_model))
    assert "exported already" in _text(_execute("03_export_gguf", chain, kernel_name, None, tiny_model))
    _execute("05_eval_x_alpacaeval", chain, kernel_name, server.url, tiny_model)
    assert server.calls == calls, "the judge was called again for cached pairs"
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert len((work / "eval" / "zh" / "alpacaeval.plug.jsonl").read_text().splitlines()) == 3


def _text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            if "text" in o:
                parts.append(o["text"])
            for k, v in o.get("data", {}).items():
                if k.startswith("text/"):
                    parts.append(v if isinstance(v, str) else "".join(v))
    return "\n".join(parts)


def _check_outputs(name: str, work: Path, nb) -> None:
    """What each notebook must leave behind for the next one (and show)."""
    text = _text(nb)
    assert "scripted-test-key-not-secret" not in text, "a secret was echoed into the notebook"
    if name == "01_build_plug_data":
        for fmt in ("plug", "mono"):
            rows = [json.loads(l) for l in (work / "data" / f"train.{fmt}.zh.jsonl").read_text().splitlines() if l.strip()]
            assert len(rows) == 8
    elif name == "02_train_qlora":
        for fmt in ("plug", "mono"):
            run = work / "runs" / f"{fmt}-zh"
            assert (run / "plug_run.json").exists() and (run / "metrics.jsonl").exists()
        assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])), "no loss plot"
    elif name == "03_export_gguf":
        for fmt in ("plug", "mono"):
            report = json.loads((work / "runs" / f"{fmt}-zh" / "export_report.json").read_text())
            assert {Path(f["path"]).parent for f in report["files"].values()} == {work / "gguf"}
            assert (work / "runs" / f"{fmt}-zh" / "share" / "README.md").exists()
    elif name == "04_chat_local":
        assert "tok/s" in text
        # the served model answered through the openai client (a tiny model: any text, to the limit)
        assert re.search(r"server: http://127\.0\.0\.1:\d+/v1 model: \['[^']+'\]", text)
        assert "content:" in text and re.search(r"finish_reason: (stop|length) \| usage: \{'completion_tokens': \d+", text)
    elif name == "05_eval_x_alpacaeval":
        for fmt in ("plug", "mono"):
            assert len((work / "eval" / "zh" / f"alpacaeval.{fmt}.jsonl").read_text().splitlines()) == 3
        rep = json.loads((work / "eval" / "zh" / "report" / "report.json").read_text())
        assert [r["mode"] for r in rep["results"]] == ["pairwise", "truthful", "truthful", "svamp", "svamp"]
        assert rep["chart"] == "winrate.png"
        svamp = json.loads((work / "eval" / "zh" / "judge-svamp-plug" / "judge.json").read_text())
        assert svamp["aggregate"]["overall"]["n"] == 2
        truthful = json.loads((work / "eval" / "zh" / "judge-truthfulqa-mono" / "judge.json").read_text())
        assert truthful["aggregate"]["overall"] == {**truthful["aggregate"]["overall"], "n": 2, "error": 0, "truthful_rate": 1.0}


# --------------------------------------------------------------------------- plug_lite.notebook helpers


def test_install_plan_keeps_torch_and_picks_llama_build(monkeypatch):
    from plug_lite import notebook as nbh

    colab_t4 = nbh.Environment(True, "Tesla T4", 15.0, (7, 5), "12.6")
    plan = nbh.plan_install("plug-lite @ git+https://github.com/plug-lite/plug_lite", env=colab_t4,
                            missing=["llama_cpp", "trl"], python="py")
    cmds = [" ".join(s["cmd"]) for s in plan]
    # the prebuilt CUDA wheel is tried first and may fail; the portable CPU build is the fallback
    assert plan[0]["optional"] and "whl/cu124" in cmds[0] and "--only-binary=llama-cpp-python" in cmds[0]
    assert plan[1]["env"] == {"CMAKE_ARGS": "-DGGML_NATIVE=OFF"} and "llama-cpp-python[server]==0.3.36" in cmds[1]
    last = plan[-1]["cmd"]
    assert "plug-lite[train,gguf,eval] @ git+https://github.com/plug-lite/plug_lite" in last
    assert "trl==1.16.0" in last and any(a.startswith("torch==") for a in last)  # the installed torch is kept
    cpu = nbh.Environment(False, None, None, None, None)
    cmds = [" ".join(s["cmd"]) for s in nbh.plan_install("plug-lite==0.1.0", env=cpu, missing=["llama_cpp"])]
    assert not any("whl/cu" in c for c in cmds)
    assert nbh.plan_install("plug-lite", env=cpu, missing=[]) == []  # everything importable: nothing to do
    with pytest.raises(ValueError):
        nbh.plan_install("plug-lite", extras=("nope",), env=cpu, missing=["x"])


@pytest.mark.parametrize("req,want", [
    ("plug-lite==0.1.0", "plug-lite[train,eval]==0.1.0"),
    ("plug-lite @ git+https://x/y", "plug-lite[train,eval] @ git+https://x/y"),
    ("/content/plug_lite", "/content/plug_lite[train,eval]"),
    ("plug-lite", "plug-lite[train,eval]"),
])
def test_with_extras(req, want):
    from plug_lite.notebook import with_extras

    assert with_extras(req, ["train", "eval"]) == want


def test_get_secret_from_env_never_printed(monkeypatch, capsys):
    from plug_lite import notebook as nbh

    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.delenv("PLUG_T_SECRET", raising=False)
    monkeypatch.setenv("PLUG_T_ALT", "value-of-the-secret")
    assert nbh.get_secret("PLUG_T_SECRET") is None
    assert nbh.get_secret("PLUG_T_SECRET", env_names=("PLUG_T_ALT",)) == "value-of-the-secret"
    assert nbh.use_secret("PLUG_T_SECRET", env_names=("PLUG_T_ALT",))
    assert os.environ["PLUG_T_SECRET"] == "value-of-the-secret"
    monkeypatch.delenv("PLUG_T_SECRET")
    assert "value-of-the-secret" not in capsys.readouterr().out


def test_plot_loss_and_source_kwargs(tmp_path):
    from plug_lite import notebook as nbh
    from plug_lite.io import UserError

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 3.0 / i}) + "\n" for i in range(1, 6))
                                       + '{"step": 6, "lo')  # a torn last line is ignored
    fig = nbh.plot_loss(run, out=tmp_path / "loss.png")
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 2, 3, 4, 5] and line.get_ydata()[0] == 3.0
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(UserError):
        nbh.read_metrics(tmp_path)
    assert nbh.source_kwargs("sample") == {"source": "sample"}
    assert nbh.source_kwargs("hub:org/ds:train") == {"hf_dataset": "org/ds", "hf_split": "train"}
    assert nbh.source_kwargs("my.jsonl") == {"input": "my.jsonl"}
    assert "a\\|b" in nbh.markdown_table([{"x": "a|b"}])
    assert nbh.work_dir(tmp_path / "w" / "x") == tmp_path / "w" / "x" and (tmp_path / "w" / "x").is_dir()  # not Colab: no Drive
