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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/plug-lite/plug_lite/blob/main/notebooks/04_chat_local.ipynb)
#
# # 4 · Chat with the GGUF locally (llama.cpp)
#
# Loads the exported GGUF with llama-cpp-python (on the GPU when the build supports it) and
# chats. A PLUG model first writes the instruction and an answer in the pivot language, then the
# answer in the target language: by default the pivot is hidden while it streams; set
# `SHOW_PIVOT = True` to see it. After each answer: decode speed (tokens/s), time to the first
# target-language character, and the tokens spent on the pivot.
#
# Before: `03_export_gguf`. Next: `05_eval_x_alpacaeval`.

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
FORMAT = "plug"  # which run to chat with: plug or mono
QUANT = None  # which exported file (e.g. "Q8_0"); None: the smallest
GGUF = None  # or any GGUF path (overrides FORMAT/QUANT)
WORK_DIR = "plug_work"  # shared by the five notebooks
USE_DRIVE = True  # Colab: keep WORK_DIR in Google Drive (each notebook has its own runtime; survives disconnects)
SHOW_PIVOT = False  # show the pivot-language sections
PROMPTS = None  # your questions; None: the first two of the shipped sample in TARGET
MAX_TOKENS = 512
N_GPU_LAYERS = -1  # -1: all layers on the GPU when llama.cpp was built with CUDA; 0: CPU
CTX = 2048
INTERACTIVE = False  # True: a prompt box loop at the end (empty line ends it)

# %%
from pathlib import Path
from plug_lite import chat, evalsets, runs
from plug_lite.engine import EngineOptions

if not PROMPTS:
    PROMPTS = [r["instruction"] for r in evalsets.load_eval_set("sample", TARGET, limit=2)]
work = runs.WorkFolder(nb.work_dir(WORK_DIR, drive=USE_DRIVE))
path = Path(GGUF) if GGUF else runs.exported_gguf(work.run_dir(FORMAT, TARGET), QUANT)
session = chat.ChatSession(path, options=EngineOptions(ctx=CTX, gpu_layers=N_GPU_LAYERS), max_new_tokens=MAX_TOKENS)
print(f"{path.name}: {session.mode}, target {session.target.name if session.target else '-'}, "
      f"pivot {session.pivot.name}, context {session.engine.n_ctx}, GPU layers {session.engine.gpu_layers}")
if session.note:
    print("note:", session.note)

# %% [markdown]
# ## Answers
# Streamed as they are generated; the pivot-language part is hidden unless `SHOW_PIVOT`.

# %%
turns = []
for prompt in PROMPTS:
    print(">>>", prompt)
    turns.append(nb.stream_answer(session, prompt, show_pivot=SHOW_PIVOT))
    session.reset()  # single-turn questions

# %% [markdown]
# ## The same question, pivot shown
# What a PLUG model writes before its answer: the instruction and an answer in the pivot
# language (a mono model has no pivot part).

# %%
print(">>>", PROMPTS[0])
turn = nb.stream_answer(session, PROMPTS[0], show_pivot=True)
session.reset()

# %% [markdown]
# ## Speed

# %%
nb.show_markdown(nb.markdown_table([
    {"prompt": t["question"][:40], "status": t["status"], "tokens": t["stats"]["completion_tokens"],
     "pivot tokens": t["stats"]["pivot_tokens"], "decode tokens/s": t["stats"]["decode_tokens_per_s"],
     "first answer char (s)": t["stats"]["first_target_s"]} for t in turns + [turn]]))

# %% [markdown]
# ## Your turn
# With `INTERACTIVE = True`, type questions; an empty line ends the chat. The conversation keeps
# only the target-language answers as history.

# %%
if INTERACTIVE:
    while (text := input("you> ").strip()):
        nb.stream_answer(session, text, show_pivot=SHOW_PIVOT)
session.close()
