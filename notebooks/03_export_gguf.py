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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/plug-lite/plug_lite/blob/main/notebooks/03_export_gguf.ipynb)
#
# # 3 · Export: merge, GGUF, quantize, share
#
# Merges each run's LoRA adapter into its base model, converts it to GGUF with llama.cpp's own
# converter, quantizes it, and checks parity: the chat template, BOS/EOS and PLUG metadata in the
# file, the prompt's token ids in transformers and llama.cpp, and greedy text of the GGUF files
# against the merged model (a small fine-tune can be rounded away by quantization). Then it
# writes a model card and an Ollama Modelfile, and optionally pushes to the Hugging Face Hub.
#
# Before: `02_train_qlora`. Next: `04_chat_local`.

# %% [markdown]
# ## Install
# On Colab this installs plug-lite and pinned versions of its dependencies, keeping Colab's own
# torch. Where plug_lite and its dependencies are importable already it does nothing.
# `LLAMA_TOOLS = True` also compiles llama.cpp's `llama-quantize` and `llama-imatrix` (and
# `llama-perplexity`, `llama-server`) from the installed llama-cpp-python's sources, once per
# runtime: 405-671 s measured on 2-core machines (not timed on Colab). Export then makes an
# importance matrix from the run's own rows, which keeps 4-bit and smaller files closer to F16 in the target language,
# and can write IQ4_XS.

# %%
PLUG_LITE_PIP = "plug-lite @ git+https://github.com/plug-lite/plug_lite@main"  # placeholder owner
LLAMA_TOOLS = False  # True: build llama.cpp's programs for importance matrices (7-11 minutes on 2 cores)
import importlib.util, subprocess, sys
if importlib.util.find_spec("plug_lite") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PLUG_LITE_PIP], check=True)
from plug_lite import notebook as nb
nb.ensure_installed(PLUG_LITE_PIP, extras=("train", "gguf", "eval"), llama_tools=LLAMA_TOOLS)

# %% [markdown]
# ## Parameters

# %% tags=["parameters"]
TARGET = "zh"
PIVOT = "en"
FORMATS = ["plug", "mono"]  # the runs of 02_train_qlora to export
QUANTS = ["Q8_0", "Q5_K_M"]  # export's default; the drift table says how far each is from the F16 (Q4_K_M: smaller, drifts more)
ADAPTER_GGUF = True  # also write the LoRA adapter as a GGUF (a few MB, applied on top of a base GGUF)
PARITY_PROMPTS = 3  # prompts for the greedy parity check
WORK_DIR = "plug_work"  # shared by the five notebooks
USE_DRIVE = True  # Colab: keep WORK_DIR in Google Drive (each notebook has its own runtime; survives disconnects)
OVERWRITE = False  # export again even when the files exist
PUSH = False  # upload the PLUG model to the Hugging Face Hub (token: Colab secret or env HF_TOKEN)
HF_REPO = None  # "<your-hf-name>/<model>-PLUG-zh-GGUF"
PRIVATE = True

# %%
from pathlib import Path
from plug_lite import export, runs, share

work = runs.WorkFolder(nb.work_dir(WORK_DIR, drive=USE_DRIVE))
run_dirs = {fmt: work.run_dir(fmt, TARGET) for fmt in FORMATS}

# %% [markdown]
# ## Merge, convert, quantize, verify
# Files go to `WORK_DIR/gguf/`, named `<Base>-<Size>-PLUG-<lang>-<QUANT>.gguf`. A run exported
# before is not exported again (its report is read back).

# %%
reports = {}
for fmt, run in run_dirs.items():
    reports[fmt] = None if OVERWRITE else runs.export_report(run)
    if reports[fmt]:
        print(f"{fmt}: exported already ({run / 'export_report.json'})")
        continue
    export.main(run, out_dir=work.gguf_dir, quants=QUANTS, adapter=ADAPTER_GGUF, n_prompts=PARITY_PROMPTS)
    reports[fmt] = runs.read_export_report(run)

# %% [markdown]
# ## Parity report
# Greedy text of each GGUF file against the merged model; "fine-tune visible" counts prompts
# where the merged model's text differs from the untuned base's.

# %%
for fmt, rep in reports.items():
    nb.show_markdown(f"### {fmt}\n" + nb.export_table(rep))
    nb.show_markdown(nb.parity_table(rep))

# %% [markdown]
# ## Model card and Ollama Modelfile
# Written into each run's `share/` folder; nothing is uploaded here.

# %%
shared = {fmt: share.main(run, push=HF_REPO if fmt == "plug" else None, dry_run=True) for fmt, run in run_dirs.items()}
card = shared[FORMATS[0]]["written"]
nb.show_markdown(Path(card["README.md"]).read_text(encoding="utf-8")[:4000])
print(Path(card["Modelfile"]).read_text(encoding="utf-8"))

# %% [markdown]
# ## Optional: push to the Hugging Face Hub
# Add a secret named `HF_TOKEN` in Colab's key panel (or set the environment variable), set
# `HF_REPO` and `PUSH = True`. The token goes to the upload only: it is never printed.

# %%
if PUSH:
    if not HF_REPO or "plug" not in run_dirs:
        raise SystemExit("set HF_REPO = '<your-hf-name>/<repo>' and keep 'plug' in FORMATS")
    if not nb.use_secret("HF_TOKEN", env_names=("HUGGING_FACE_HUB_TOKEN",)):
        raise SystemExit("no HF_TOKEN secret or environment variable: add one, or set PUSH = False")
    share.main(run_dirs["plug"], push=HF_REPO, private=PRIVATE)
else:
    print("PUSH = False: nothing uploaded")
