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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/plug-lite/plug_lite/blob/main/notebooks/01_build_plug_data.ipynb)
#
# # 1 · Build PLUG training data
#
# PLUG (Pivot Language gUided Generation, Zhang et al., ACL 2024) teaches a model to answer an
# instruction in a target language by first restating it and answering in a pivot language
# (English), then writing the final answer in the target language. This notebook turns parallel
# instruction data into supervised fine-tuning rows in two formats:
#
# * **plug** — pivot instruction, pivot answer, target answer (the method);
# * **mono** — the target answer only (the paper's baseline, trained for comparison).
#
# Next: `02_train_qlora`. The five notebooks share `WORK_DIR`; on Colab it lives in Google Drive
# (each notebook gets its own runtime, and `/content` is lost on disconnect), and re-running a
# notebook reuses what is already there. (`plug-lite` is a placeholder GitHub owner in the badge
# links and the install cell: change it to the repository's real owner.)

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
TARGET = "zh"  # target language: zh, ko, it, es (or one you registered)
PIVOT = "en"  # pivot language
SOURCE = "sample"  # "sample" (shipped), a local JSON/JSONL/CSV file, or "hub:<dataset id>"
FORMATS = ["plug", "mono"]  # PLUG and the monolingual baseline
THINK = False  # add an explicit reasoning section to PLUG rows
LIMIT = None  # use only the first N instructions (None: all)
WORK_DIR = "plug_work"  # shared by the five notebooks
USE_DRIVE = True  # Colab: keep WORK_DIR in Google Drive (each notebook has its own runtime; survives disconnects)
SHOW = 2  # rendered examples to show
OVERWRITE = False  # rebuild files that exist already

# %%
from pathlib import Path
from plug_lite import data, languages, runs

work = runs.WorkFolder(nb.work_dir(WORK_DIR, drive=USE_DRIVE))
print("target:", languages.get(TARGET).name, "| pivot:", languages.get(PIVOT).name)
print(nb.environment().describe())

# %% [markdown]
# ## Build the rows
# One file per format: `WORK_DIR/data/train.<format>.<target>.jsonl` (TRL prompt-completion rows)
# and its summary beside it (`.summary.json`). Files built before are kept unless `OVERWRITE`.

# %%
import json

built = {}
for fmt in FORMATS:
    out = work.data_file(fmt, TARGET)
    summary_file = Path(f"{out}.summary.json")
    if out.exists() and summary_file.exists() and not OVERWRITE:
        built[fmt] = json.loads(summary_file.read_text(encoding="utf-8"))
        print(data.format_summary(built[fmt]), f"\n(kept {out})")
        continue
    built[fmt] = data.main(out=out, fmt=fmt, target=TARGET, pivot=PIVOT, think=THINK and fmt == "plug",
                           max_samples=LIMIT, **nb.source_kwargs(SOURCE))

# %% [markdown]
# ## Summary

# %%
nb.show_markdown(nb.markdown_table([
    {"format": f, "rows in": s["rows_in"], "rows out": s["rows_out"], "dropped": sum(s["dropped"].values()),
     "completion chars (mean)": s["chars"]["completion"]["mean"]} for f, s in built.items()]))

# %% [markdown]
# ## Rendered examples
# What the model is given (system prompt, instruction) and learns to write (the completion).

# %%
for fmt in FORMATS:
    nb.show_markdown(f"### {fmt}")
    nb.show_rows(work.data_file(fmt, TARGET), n=SHOW)
