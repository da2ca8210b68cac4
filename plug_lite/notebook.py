"""Small helpers the notebooks in ``notebooks/`` call. Standard library only at import time.

The notebooks hold no logic of their own: every cell calls a function of this package. What is
specific to running in a notebook lives here:

* :func:`ensure_installed` — the install cell: on Colab (keeps Colab's torch) or a bare machine it
  installs the pinned extras; where everything is importable already (CI, ``make install``) it
  does nothing. :func:`plan_install` returns the pip commands without running them.
* :func:`environment` — Colab or not, which GPU (the training preset follows from it in
  :mod:`plug_lite.train`).
* :func:`get_secret` — an API key or token from Colab's secrets or the environment; never printed.
* :func:`read_metrics` / :func:`plot_loss` — the training loss curve from a run's ``metrics.jsonl``.
* :func:`show_markdown` / :func:`markdown_table` — display helpers that also work outside Jupyter.
* :func:`stream_answer` — one chat turn printed as it streams (:class:`plug_lite.engine.StreamPrinter`).

Where a notebook's files go, and whether a run is finished or exported, is :mod:`plug_lite.runs`'s
(``runs.WorkFolder``, ``runs.is_finished``, ``runs.export_report``, ``runs.exported_gguf``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "PINS",
    "EXTRA_MODULES",
    "Environment",
    "environment",
    "in_colab",
    "work_dir",
    "source_kwargs",
    "show_rows",
    "run_summary",
    "plan_install",
    "with_extras",
    "ensure_installed",
    "get_secret",
    "use_secret",
    "read_metrics",
    "plot_loss",
    "show_markdown",
    "markdown_table",
    "show_image",
    "stream_answer",
    "export_table",
    "parity_table",
]

#: Versions measured to work together (the same as the repository's constraints.txt; a test keeps
#: them equal). torch is left out on purpose: Colab's preinstalled CUDA build is kept.
PINS = {
    "transformers": "4.57.6",
    "trl": "1.16.0",
    "peft": "0.21.2",
    "datasets": "4.8.5",
    "accelerate": "1.15.0",
    "sentencepiece": "0.2.3",
    "bitsandbytes": "0.50.2",
    "llama-cpp-python": "0.3.36",
}

#: Modules that must import for each extra; when all of them do, nothing is installed.
EXTRA_MODULES = {
    "train": ("torch", "transformers", "trl", "peft", "datasets", "accelerate"),
    "gguf": ("llama_cpp", "numpy"),
    "eval": ("openai", "matplotlib"),
    "notebooks": ("jupytext", "nbclient"),
}

#: llama-cpp-python's prebuilt CUDA wheels (see its README, "Pre-built Wheel"). The index lags
#: PyPI's releases: when it has no wheel for this Python, the CPU build below is used instead.
LLAMA_CUDA_INDEX = "https://abetlen.github.io/llama-cpp-python/whl/{cuda}"
#: The portable CPU build: the native one enables AMX on some CPUs and quantized models crash.
LLAMA_CPU_CMAKE = "-DGGML_NATIVE=OFF"


# --------------------------------------------------------------------------- environment


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or bool(os.environ.get("COLAB_RELEASE_TAG"))


@dataclass(frozen=True)
class Environment:
    colab: bool
    gpu: str | None  # "Tesla T4", or None without a CUDA GPU
    gpu_memory_gib: float | None
    compute_capability: tuple[int, int] | None
    cuda: str | None  # CUDA version of the installed torch ("12.4"), or None

    def describe(self) -> str:
        where = "Colab" if self.colab else "local machine"
        if not self.gpu:
            return f"{where}, no CUDA GPU (CPU only)"
        cc = ".".join(map(str, self.compute_capability)) if self.compute_capability else "?"
        mem = f"{self.gpu_memory_gib:.0f} GiB" if self.gpu_memory_gib else "? GiB"
        return f"{where}, GPU {self.gpu} ({mem}, compute capability {cc}, CUDA {self.cuda or '?'})"


def _nvidia_smi() -> tuple[str, float] | None:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()[:1]
    if not first or "," not in first[0]:
        return None
    name, mem = (x.strip() for x in first[0].rsplit(",", 1))
    try:
        return name, float(mem) / 1024
    except ValueError:
        return name, 0.0


def _torch_cuda_from_version() -> str | None:
    """CUDA version of the installed torch read from its version string ("2.8.0+cu126" -> "12.6"),
    without importing it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        local = version("torch").partition("+")[2]
    except PackageNotFoundError:
        return None
    m = re.fullmatch(r"cu(\d+)(\d)", local)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def environment(*, import_torch: bool = True) -> Environment:
    """Where the notebook runs: Colab or not, and the first CUDA GPU (via torch when installed,
    else ``nvidia-smi``). ``import_torch=False`` never imports torch (the install cell uses it:
    importing torch, hence numpy, before pip runs could leave stale modules in the kernel)."""
    colab = in_colab()
    if import_torch and importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            return Environment(colab, p.name, p.total_memory / 2**30, (p.major, p.minor), torch.version.cuda)
        return Environment(colab, None, None, None, None)
    smi = _nvidia_smi()
    if smi:
        return Environment(colab, smi[0], smi[1], None, _torch_cuda_from_version())
    return Environment(colab, None, None, None, None)


def work_dir(path: str | os.PathLike, *, drive: bool = True) -> Path:
    """The notebooks' shared folder, created. On Colab each notebook runs in its own runtime and
    ``/content`` is lost on disconnect, so with ``drive=True`` Google Drive is mounted (Colab asks
    for permission once) and a relative ``path`` goes under ``MyDrive``. Elsewhere: ``path``."""
    p = Path(path).expanduser()
    if drive and in_colab() and not p.is_absolute():
        mount = Path("/content/drive")
        if not (mount / "MyDrive").is_dir():
            from google.colab import drive as gdrive  # type: ignore[import-not-found]

            gdrive.mount(str(mount))
        p = mount / "MyDrive" / p
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------- install


def _importable(modules: Iterable[str]) -> list[str]:
    """The modules of ``modules`` that cannot be imported (found, not executed)."""
    missing = []
    for m in modules:
        try:
            if importlib.util.find_spec(m) is None:
                missing.append(m)
        except (ImportError, ValueError):
            missing.append(m)
    return missing


def _cuda_tag(cuda: str | None) -> str | None:
    """``"12.6"`` -> ``"cu124"``: the newest prebuilt llama-cpp-python CUDA index not newer than
    the runtime's CUDA (the index has cu121..cu124 for CUDA 12)."""
    if not cuda:
        return None
    try:
        major, minor = (int(x) for x in cuda.split(".")[:2])
    except ValueError:
        return None
    if major < 12 or (major == 12 and minor < 1):
        return None
    if major > 12:
        return "cu124"
    return f"cu12{min(minor, 4)}"


def with_extras(requirement: str, extras: Sequence[str]) -> str:
    """``"plug-lite==0.1.0"`` -> ``"plug-lite[train,eval]==0.1.0"``; also for a PEP 508 direct
    reference (``"plug-lite @ git+https://..."``) and a local path (``"/content/plug_lite"``)."""
    if not extras:
        return requirement
    tag = f"[{','.join(extras)}]"
    if requirement.startswith((".", "/", "~")) or os.sep in requirement.split(" @ ")[0]:
        return requirement + tag  # a local folder
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$", requirement)
    if not m:
        raise ValueError(f"not a pip requirement: {requirement!r}")
    return f"{m.group(1)}{tag}{m.group(2)}"


def plan_install(
    package: str,
    *,
    extras: Sequence[str] = ("train", "gguf", "eval"),
    env: Environment | None = None,
    missing: Sequence[str] | None = None,
    python: str | None = None,
) -> list[dict]:
    """The pip commands :func:`ensure_installed` would run, as ``{"cmd": [...], "env": {...},
    "why": str, "optional": bool}``; empty when every module of ``extras`` imports.

    ``package`` is a pip requirement for plug-lite itself without extras, e.g.
    ``"plug-lite @ git+https://github.com/<owner>/plug_lite"`` or ``"plug-lite==0.1.0"``.
    The installed torch (Colab's CUDA build) is kept by pinning it to its own version.
    """
    for e in extras:
        if e not in EXTRA_MODULES:
            raise ValueError(f"unknown extra {e!r}; expected one of {', '.join(EXTRA_MODULES)}")
    if missing is None:
        missing = _importable(m for e in extras for m in EXTRA_MODULES[e])
    if not missing:
        return []
    env = env or environment(import_torch=False)
    py = python or sys.executable
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    plan: list[dict] = []

    keep_torch: list[str] = []
    if importlib.util.find_spec("torch") is not None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            keep_torch = [f"torch=={version('torch')}"]
        except PackageNotFoundError:
            pass
    elif "train" in extras and not env.gpu:
        # Never let pip pick torch itself on a CPU machine: an unpinned torch is a multi-GB CUDA build.
        plan.append({"cmd": pip + ["torch", "--index-url", "https://download.pytorch.org/whl/cpu"],
                     "env": {}, "why": "CPU build of torch", "optional": False})

    if "gguf" in extras and "llama_cpp" in missing:
        ver = PINS["llama-cpp-python"]
        tag = _cuda_tag(env.cuda) if env.gpu else None
        if tag:
            plan.append({
                "cmd": pip + ["--only-binary=llama-cpp-python", "--extra-index-url",
                              LLAMA_CUDA_INDEX.format(cuda=tag), "llama-cpp-python[server]>=0.3.16"],
                "env": {}, "why": f"llama-cpp-python prebuilt CUDA wheel ({tag})", "optional": True,
            })
        plan.append({
            "cmd": pip + ["--no-cache-dir", f"llama-cpp-python[server]=={ver}"],
            "env": {"CMAKE_ARGS": LLAMA_CPU_CMAKE},
            "why": "llama-cpp-python portable CPU build (compiles, about 5 minutes)",
            "optional": False, "skip_if_importable": "llama_cpp",
        })

    req = with_extras(package, extras)
    pins = [f"{k}=={v}" for k, v in PINS.items() if k != "llama-cpp-python"]
    plan.append({"cmd": pip + [req] + pins + keep_torch, "env": {},
                 "why": f"plug-lite with extras {', '.join(extras)} (pinned versions)", "optional": False})
    return plan


def ensure_installed(
    package: str,
    *,
    extras: Sequence[str] = ("train", "gguf", "eval"),
    dry_run: bool = False,
    llama_tools: bool = False,
) -> None:
    """Install what ``extras`` need, unless it is all importable already (then: nothing).

    Prints one line per step (what and why), never the environment. See :func:`plan_install`.
    ``llama_tools``: then compile llama.cpp's programs (``llama-quantize``, ``llama-imatrix``,
    ``llama-perplexity``, ``llama-server``; an importance matrix for export needs them) from the
    sources of the installed llama-cpp-python, once per machine: 7-11 minutes on 2 CPU cores
    (:func:`plug_lite.toolchain.build_tools`).
    """
    env = environment(import_torch=False)
    plan = plan_install(package, extras=extras, env=env)
    if not plan:
        print(f"plug_lite and its {', '.join(extras)} extras are installed ({env.describe()}): nothing to do")
        if llama_tools and not dry_run:
            _build_llama_tools()
        return
    print(f"installing for: {env.describe()}")
    for step in plan:
        skip = step.get("skip_if_importable")
        if skip and importlib.util.find_spec(skip) is not None:
            continue
        print(f"- {step['why']}")
        if dry_run:
            continue
        proc = subprocess.run(step["cmd"], env={**os.environ, **step["env"]})
        if proc.returncode != 0:
            if step["optional"]:
                print("  (not available here; falling back)")
                continue
            raise RuntimeError(f"install step failed: {step['why']} (pip exit code {proc.returncode})")
        importlib.invalidate_caches()
    if llama_tools and not dry_run:
        _build_llama_tools()
    if env.colab and not dry_run:
        print("done. If a later import fails with a version mismatch: Runtime > Restart session, then run on.")


def _build_llama_tools() -> None:
    from . import toolchain

    if not toolchain.tools_status()["missing"]:
        print(f"llama.cpp's programs are built ({toolchain.find_tool('llama-quantize').parent})")
        return
    print("- llama.cpp's programs from llama-cpp-python's sources (compiles, 7-11 minutes on 2 CPU cores, once)")
    toolchain.build_tools()


# --------------------------------------------------------------------------- secrets


def get_secret(name: str, *, env_names: Sequence[str] = ()) -> str | None:
    """A secret from Colab's Secrets panel (``google.colab.userdata``) or the environment
    (``name`` first, then ``env_names``); None when absent. The value is never printed or logged:
    pass it straight to the function that needs it."""
    if in_colab():
        try:
            from google.colab import userdata  # type: ignore[import-not-found]

            value = userdata.get(name)
            if value:
                return str(value)
        except Exception:  # SecretNotFoundError, NotebookAccessError (access not granted), ...
            pass
    for key in (name, *env_names):
        value = os.environ.get(key)
        if value:
            return value
    return None


def use_secret(name: str, *, env: str | None = None, env_names: Sequence[str] = ()) -> bool:
    """Put the secret ``name`` (see :func:`get_secret`) into the environment variable ``env``
    (default ``name``) of this process, where plug_lite's commands read it; True when found.
    Nothing is printed, and nothing is saved in the notebook."""
    value = get_secret(name, env_names=env_names)
    if not value:
        return False
    os.environ[env or name] = value
    return True


# --------------------------------------------------------------------------- training curves


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl`` (a torn last line is ignored)."""
    from .io import UserError, read_jsonl_resumable

    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"{path}: no metrics (has this run trained yet?)")
    return read_jsonl_resumable(path)


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, r in enumerate(records):
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            step = r.get("step", r.get("global_step", i + 1))
            xs.append(float(step))
            ys.append(float(v))
    return xs, ys


def plot_loss(run_dirs: str | os.PathLike | Sequence[str | os.PathLike], *, out: str | os.PathLike | None = None,
              labels: Sequence[str] | None = None):
    """A matplotlib figure of training (and evaluation, when logged) loss against step for one or
    more runs; saved as PNG to ``out`` when given, shown when in Jupyter. Returns the figure."""
    import matplotlib

    if "ipykernel" not in sys.modules and "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    labels = list(labels) if labels else [Path(d).name for d in run_dirs]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    drawn = 0
    for run, label in zip(run_dirs, labels):
        records = read_metrics(run)
        for key, style in (("loss", "-"), ("eval_loss", "--")):
            xs, ys = _series(records, key)
            if xs:
                ax.plot(xs, ys, style, marker="o" if len(xs) < 20 else None, label=f"{label} {key}")
                drawn += 1
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss logged yet", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    if out:
        from .io import atomic_path

        with atomic_path(out, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    if "ipykernel" in sys.modules:  # show it once, here (not again when the cell ends)
        try:
            from IPython.display import display

            display(fig)
        except ImportError:
            pass
        plt.close(fig)
    return fig


def run_summary(run_dir: str | os.PathLike) -> dict:
    """One line about a finished training run, from its ``plug_run.json``."""
    from .runs import RunRecord

    rec = RunRecord.load(run_dir)
    m = rec.metrics
    return {"run": Path(run_dir).name, "format": rec.spec.format, "target": rec.spec.target,
            "base": rec.base_name or rec.base_model, "backend": rec.backend,
            "steps": m.steps, "first loss": m.first_loss, "final loss": m.final_loss,
            "seconds": m.seconds, "tokens/s": m.tokens_per_s, "peak MiB": m.peak_memory_mib}


# --------------------------------------------------------------------------- display


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts); ``|`` and newlines in cells are escaped."""
    if not rows:
        return "_(no rows)_"
    columns = list(columns or rows[0].keys())

    def cell(v) -> str:
        if isinstance(v, float):
            v = f"{v:.3g}"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v, ensure_ascii=False)
        return str("" if v is None else v).replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def show_markdown(text: str) -> None:
    """Render Markdown in Jupyter; print it elsewhere."""
    if "ipykernel" in sys.modules:
        try:
            from IPython.display import Markdown, display

            display(Markdown(text))
            return
        except ImportError:
            pass
    print(text)


# --------------------------------------------------------------------------- chat


def stream_answer(session, text: str, *, show_pivot: bool = False, out=None) -> dict:
    """Ask a :class:`plug_lite.chat.ChatSession` and print the answer as it streams (the pivot
    hidden, or shown with its headers), as ``plug-lite chat`` does, then the speed line (decode
    tokens/s, time to the first target-language character). Returns the turn as a dict."""
    from .engine import StreamPrinter, stats_line

    out = out or sys.stdout
    printer = StreamPrinter(pivot=session.pivot, target=session.target, plug=session.mode == "plug",
                            show_pivot=show_pivot, out=out, err=out)
    printer.start()
    for ev in session.ask(text):
        printer.event(ev)
    printer.end(session.last.parse)
    out.write(f"{stats_line(session.last.stats)}\n")
    out.flush()
    return session.last.to_dict()


def export_table(report) -> str:
    """Markdown of the files of an export report (a :class:`plug_lite.runs.ExportRecord`): quant
    type, size, file name."""
    return markdown_table([{"file": k, "MiB": f.bytes / 2**20, "name": f.path.name} for k, f in report.files.items()])


def parity_table(report) -> str:
    """Markdown of an export report's parity check (a :class:`plug_lite.runs.ExportRecord`): per
    GGUF file, greedy text identical to the merged model on how many prompts, token agreement
    with the merged and the base model."""
    v = report.verify
    if v is None:
        return "_parity not checked_"
    if not v.passed:
        return f"**parity check failed:** {v.error}"
    rows = [{"file": name, "identical to merged": f"{s.identical_to_merged}/{s.prompts}",
             "agreement with merged": s.agreement_with_merged, "agreement with base": s.agreement_with_base}
            for name, s in v.greedy.items()]
    text = markdown_table(rows)
    if v.fine_tune_visible_on is not None:
        text += f"\n\nfine-tune visible on: {v.fine_tune_visible_on}"
    for w in v.warnings:
        text += f"\n\n**warning:** {w}"
    return text


# --------------------------------------------------------------------------- data


def source_kwargs(source: str) -> dict:
    """The notebook's one ``SOURCE`` string as keyword arguments of :func:`plug_lite.data.build`:
    ``"sample"`` (shipped), ``"hub:<dataset id>"`` (or ``"hub:<id>:<split>"``), or a local file."""
    source = str(source).strip()
    if source == "sample":
        return {"source": "sample"}
    if source.startswith("hub:"):
        name, _, split = source[4:].partition(":")
        return {"hf_dataset": name, **({"hf_split": split} if split else {})}
    return {"input": source}


def show_rows(path: str | os.PathLike, n: int = 2, *, width: int = 600) -> None:
    """Print the first ``n`` rows of a prompt-completion JSONL file turn by turn (long turns cut
    at ``width`` characters)."""
    from .io import read_records

    for row in read_records(path)[:n]:
        show_markdown(f"**row {row.get('id')}** ({row.get('format')}, {row.get('target')})")
        for msg in list(row.get("prompt", [])) + list(row.get("completion", [])):
            text = msg.get("content", "")
            cut = text if len(text) <= width else text[:width] + " [...]"
            print(f"[{msg.get('role')}]\n{cut}\n")


def show_image(path: str | os.PathLike) -> None:
    """Show a PNG in Jupyter; print its path elsewhere."""
    if "ipykernel" in sys.modules:
        try:
            from IPython.display import Image, display

            display(Image(filename=str(path)))
            return
        except ImportError:
            pass
    print(f"(image: {path})")
