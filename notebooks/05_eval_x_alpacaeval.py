# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/plug-lite/plug_lite/blob/main/notebooks/05_eval_x_alpacaeval.ipynb)
#
# # 5 · Evaluate: X-AlpacaEval with an LLM judge
#
# The paper's comparison: the PLUG model against the monolingual baseline on X-AlpacaEval
# instructions in the target language. Both exported GGUF models answer every instruction
# (greedy), then
#
# * **offline metrics** need no API: share of answers in the PLUG format, language fidelity
#   (is the answer in the target language?), answer length, tokens spent on the pivot;
# * a **pairwise judge** (any OpenAI-compatible API) compares the two answers to each
#   instruction, in both orders to cancel position bias, and reports win / tie / loss rates.
#
# The judge key comes from Colab's secrets (key panel, name `OPENAI_API_KEY`) or the environment;
# it is never printed. A local server (llama.cpp's server, vLLM, Ollama) works through
# `JUDGE_BASE_URL`. Answers and judge calls are saved as they come: after a disconnect, run the
# notebook again and only the missing ones are done. X-TruthfulQA and X-SVAMP are optional
# sections at the end.
#
# Before: `03_export_gguf`.

# %% [markdown]
# ## Install
# On Colab this installs plug-lite and pinned versions of its dependencies, keeping Colab's own
# torch. Where plug_lite and its dependencies are importable already it does nothing.

# %%
PLUG_LITE_PIP = "plug-lite @ git+https://github.com/plug-lite/plug_lite@main"  # placeholder owner
import importlib.util, subprocess, sys
if importlib.util.find_spec("plug_lite") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PLUG_LITE_PIP], check=True)
from plug_lite import notebook as nb
nb.ensure_installed(PLUG_LITE_PIP, extras=("train", "gguf", "eval"))

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
TARGET = "zh"  # the pivot language comes from the models (their GGUF metadata)
EVAL_SET = "x-alpacaeval"  # "x-alpacaeval" (hub), "sample" (shipped, offline), or a local JSON/JSONL file
LIMIT = None  # first N instructions only (None: all)
QUANT = None  # which exported file to evaluate (e.g. "Q8_0"); None: the smallest
MAX_TOKENS = 1024  # new tokens per answer (PLUG answers are about twice as long: pivot + target)
N_GPU_LAYERS = -1  # llama.cpp layers on the GPU (-1: all when built with CUDA; 0: CPU)
WORK_DIR = "plug_work"  # shared by the five notebooks
USE_DRIVE = True  # Colab: keep WORK_DIR in Google Drive (each notebook has its own runtime; survives disconnects)
JUDGE_MODEL = "gpt-4o-mini"
JUDGE_BASE_URL = None  # None: api.openai.com; or e.g. "http://localhost:8080/v1"
JUDGE_KEY_NAME = "OPENAI_API_KEY"  # the Colab secret / environment variable holding the key
PARALLEL = 4  # judge calls in flight
RUN_TRUTHFULQA = False  # optional: X-TruthfulQA (judged against reference answers)
TRUTHFULQA_SET = "x-truthfulqa"  # or a local JSON/JSONL file named *truthful*
RUN_SVAMP = False  # optional: X-SVAMP (maths, accuracy of the final number; no judge needed)
SVAMP_SET = "x-svamp"  # or a local JSON/JSONL file named *svamp*

# %%
from pathlib import Path
from plug_lite import generate, judge, metrics, report, runs
from plug_lite.engine import EngineOptions
from plug_lite.io import read_records
from plug_lite.llm import LLMSettings

work = runs.WorkFolder(nb.work_dir(WORK_DIR, drive=USE_DRIVE))
models = {fmt: runs.exported_gguf(work.run_dir(fmt, TARGET), QUANT) for fmt in ("plug", "mono")}
for fmt, path in models.items():
    print(f"{fmt}: {path}")
print(nb.environment().describe())

# %% [markdown]
# ## Generate the answers
# `WORK_DIR/eval/<target>/<set>.<format>.jsonl`, one line per instruction, written as it is answered; a re-run
# skips the ids already there.

# %%
def answers(eval_set, tag, limit=LIMIT):
    files = {}
    for fmt, path in models.items():
        files[fmt] = work.answers_file(TARGET, tag, fmt)
        generate.main(str(path), eval_set=eval_set, target=TARGET, out=str(files[fmt]), limit=limit,
                      max_new_tokens=MAX_TOKENS, options=EngineOptions(gpu_layers=N_GPU_LAYERS),
                      generator=f"{fmt}-{TARGET}")
    return files

alpaca = answers(EVAL_SET, "alpacaeval")

# %% [markdown]
# ## Offline metrics (no API)

# %%
offline = {fmt: metrics.offline_metrics(read_records(f), TARGET) for fmt, f in alpaca.items()}
nb.show_markdown(nb.markdown_table([
    {"model": fmt, "answers": m["n"], "PLUG format ok": m["format_compliance"], "in target language": m["language_fidelity"],
     "answer chars (mean)": m["answer_chars_mean"], "pivot share of tokens": m["pivot_overhead"]}
    for fmt, m in offline.items()]))

# %% [markdown]
# ## Pairwise judge: PLUG vs mono
# First a dry run: how many calls (cached ones are free) and the estimated cost.

# %%
has_key = nb.use_secret(JUDGE_KEY_NAME, env="PLUG_LITE_JUDGE_API_KEY")
use_judge = has_key or JUDGE_BASE_URL is not None  # a local server needs no key
print(f"judge key ({JUDGE_KEY_NAME}):", "found" if has_key else "not found",
      "| judge:", f"{JUDGE_MODEL} at {JUDGE_BASE_URL or 'api.openai.com'}" if use_judge else "skipped (offline metrics only)")
judge_endpoint = LLMSettings(model=JUDGE_MODEL, base_url=JUDGE_BASE_URL)  # the key: from the environment
judge_args = dict(a=str(alpaca["plug"]), b=str(alpaca["mono"]), mode="pairwise", target=TARGET,
                  judge=judge_endpoint, parallel=PARALLEL)
if use_judge:
    plan = judge.main(out=str(work.judge_dir(TARGET, "alpacaeval")), dry_run=True, **judge_args)
    nb.show_markdown(nb.markdown_table([plan["dry_run"]]))

# %%
results = []
if use_judge:
    judge.main(out=str(work.judge_dir(TARGET, "alpacaeval")), report=False, **judge_args)
    results.append(str(work.judge_dir(TARGET, "alpacaeval") / "judge.json"))

# %% [markdown]
# ## Report
# Markdown and JSON in `WORK_DIR/eval/<target>/report/`, with the win / tie / loss chart.

# %%
report_dir = work.report_dir(TARGET)
summary = report.main(results, offline=[str(f) for f in alpaca.values()], out=str(report_dir), target=TARGET)
nb.show_markdown((report_dir / "report.md").read_text(encoding="utf-8"))
if summary.get("chart"):
    nb.show_image(report_dir / summary["chart"])

# %% [markdown]
# ## Optional: X-TruthfulQA
# Each answer is judged against the reference correct / incorrect answers (truthful and
# informative rates). Set `RUN_TRUTHFULQA = True`.

# %%
if RUN_TRUTHFULQA and use_judge:
    truthful = answers(TRUTHFULQA_SET, "truthfulqa")
    for fmt, f in truthful.items():
        judge.main(str(f), out=str(work.judge_dir(TARGET, f"truthfulqa-{fmt}")), mode="truthful", eval_set=TRUTHFULQA_SET,
                   target=TARGET, judge=judge_endpoint, parallel=PARALLEL, report=False)
        results.append(str(work.judge_dir(TARGET, f"truthfulqa-{fmt}") / "judge.json"))
else:
    print("X-TruthfulQA skipped" + ("" if use_judge else " (it needs the judge)"))

# %% [markdown]
# ## Optional: X-SVAMP
# Maths word problems: the last number of the target-language answer against the reference
# (rules; no judge calls). Set `RUN_SVAMP = True`.

# %%
if RUN_SVAMP:
    svamp = answers(SVAMP_SET, "svamp")
    for fmt, f in svamp.items():
        judge.main(str(f), out=str(work.judge_dir(TARGET, f"svamp-{fmt}")), mode="svamp", eval_set=SVAMP_SET,
                   target=TARGET, report=False)
        results.append(str(work.judge_dir(TARGET, f"svamp-{fmt}") / "judge.json"))
else:
    print("X-SVAMP skipped")

# %% [markdown]
# ## Everything in one report

# %%
if RUN_TRUTHFULQA or RUN_SVAMP:
    report.main(results, offline=[str(f) for f in alpaca.values()], out=str(report_dir), target=TARGET)
    nb.show_markdown((report_dir / "report.md").read_text(encoding="utf-8"))
print("report:", report_dir / "report.md")
