"""Where things go on disk, and what is done: the run folder and the work folder. Standard library
only at import time.

A **run folder** (``plug-lite train`` writes it, ``export`` and ``share`` read it)::

    plug_run.json        written last: its presence means the run finished (RUN_FILE)
    adapter/ tokenizer/ config.yaml metrics.jsonl checkpoints/
    merged/              the merged model (export)
    export_report.json   the exported GGUF files and the parity report (EXPORT_REPORT)
    imatrix.gguf         the importance matrix made from the run's rows, imatrix.json its record
    share/               model card and Ollama files (share)

A **work folder** (the demo and the notebooks keep everything of a project in one)::

    data/train.<format>.<target>.jsonl       training rows
    runs/<format>-<target>/                  run folders
    gguf/                                    exported GGUF files
    eval/<target>/<set>.<model>.jsonl        answers to an evaluation set
    eval/<target>/judge-<name>/              judge results
    eval/<target>/report/                    the report

One naming rule: a run is ``[<model>-]<format>-<target>`` (:func:`run_name`; the model is left
out inside a work folder, which holds one base model's runs) and a GGUF file
``<Base>-<Size>-PLUG-<target>-<QUANT>.gguf`` (:func:`gguf_name`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .io import UserError
from .spec import PlugSpec

__all__ = ["RUN_FILE", "EXPORT_REPORT", "IMATRIX_FILE", "run_name", "is_finished", "read_run", "load_run", "run_spec",
           "resolve_base", "gguf_name", "read_export_report", "export_report", "exported_gguf", "WorkFolder"]

RUN_FILE = "plug_run.json"
EXPORT_REPORT = "export_report.json"
IMATRIX_FILE = "imatrix.gguf"
_FORMAT_TAG = {"plug": "PLUG", "mono": "Mono", "pivot_only": "PivotOnly"}


def run_name(fmt: str, target: str, model: str | None = None) -> str:
    """A run folder's name: ``<format>-<target>``, after ``<model>-`` when given (characters a
    folder name should not hold become ``-``)."""
    return re.sub(r"[^\w.-]+", "-", "-".join(x for x in (model, fmt, target) if x))


def is_finished(run: str | os.PathLike) -> bool:
    """Whether a training run finished (its ``plug_run.json`` exists)."""
    return (Path(run) / RUN_FILE).is_file()


def _read_json(path: Path, missing: str) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: {missing}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: bad JSON ({e.msg})") from None


def read_run(run: str | os.PathLike) -> dict:
    """A finished run's ``plug_run.json``."""
    return _read_json(Path(run) / RUN_FILE, "not found (the run has not finished)")


def run_spec(meta: dict) -> PlugSpec:
    """The :class:`~plug_lite.spec.PlugSpec` of a run's ``plug_run.json`` (as :func:`load_run`
    or :func:`read_run` return it)."""
    return PlugSpec.from_run(meta, str(Path(meta["_dir"]) / RUN_FILE) if meta.get("_dir") else RUN_FILE)


def load_run(run_dir: str | os.PathLike) -> dict:
    """``plug_run.json`` of a run that can be exported (checked: base model, spec, adapter), with
    ``_dir`` set."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"{run}: run directory not found")
    meta_path = run / RUN_FILE
    meta = _read_json(meta_path, f"not found (is {run} a plug-lite train run directory?)")
    if not meta.get("base_model"):
        raise UserError(f"{meta_path}: missing field 'base_model'")
    PlugSpec.from_run(meta, str(meta_path))
    if not (run / "adapter" / "adapter_config.json").is_file():
        raise UserError(f"{run / 'adapter'}: no adapter_config.json (no trained adapter in this run directory)")
    if not any((run / "adapter").glob("adapter_model.safetensors")):
        raise UserError(f"{run / 'adapter'}: no adapter_model.safetensors (no trained adapter weights)")
    meta["_dir"] = str(run)
    return meta


def resolve_base(meta: dict) -> Path:
    """The local folder of the run's base model: ``base_model_path``, ``base_model`` as a path,
    or the Hugging Face cache (offline lookup only)."""
    for cand in (meta.get("base_model_path"), meta.get("base_model")):
        if cand and (Path(cand) / "config.json").is_file():
            return Path(cand)
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(meta["base_model"], local_files_only=True))
        if (path / "config.json").is_file():
            return path
    except Exception:  # not a repo id, not cached, or huggingface_hub missing
        pass
    raise UserError(
        f"{meta['_dir']}/{RUN_FILE}: base model {meta['base_model']!r} not found "
        f"(base_model_path {meta.get('base_model_path')!r} has no config.json and it is not in the Hugging Face cache)"
    )


def gguf_name(meta: dict, quant: str, *, kind: str = "model") -> str:
    """``<Base>-<Size>-PLUG-<target>-<QUANT>.gguf`` for a run's ``plug_run.json`` (``kind="adapter"``:
    ``...-LoRA-<QUANT>``, ``kind="base"``: the untuned base, ``<Base>-<Size>-<QUANT>.gguf``)."""
    base = meta.get("base_name") or Path(str(meta["base_model"]).rstrip("/")).name
    parts = [base.replace(" ", "-")]
    if meta.get("size_label"):
        parts.append(str(meta["size_label"]))
    if kind != "base":
        parts += [_FORMAT_TAG.get(meta["format"], meta["format"]), meta["target"]]
        if kind == "adapter":
            parts.append("LoRA")
    parts.append(quant.upper())
    return "-".join(parts) + ".gguf"


def read_export_report(run: str | os.PathLike) -> dict:
    """A run's ``export_report.json``; a one-line error when the run was not exported."""
    return _read_json(Path(run) / EXPORT_REPORT, f"not found; run `plug-lite export {run}` first")


def export_report(run: str | os.PathLike, quant: str | None = None) -> dict | None:
    """The run's export report when its export is done: the parity check passed, every file it
    lists still exists and, with ``quant``, that quant type is among them. Else None (so a step
    re-run after a disconnect skips work that is done)."""
    path = Path(run) / EXPORT_REPORT
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    files = report.get("files") or {}
    paths = [f.get("path") for f in files.values()]
    if not paths or "error" in (report.get("verify") or {}) or not all(p and Path(p).is_file() for p in paths):
        return None
    if quant is not None and quant.upper() not in files:
        return None
    return report


def exported_gguf(run: str | os.PathLike, quant: str | None = None) -> Path:
    """The GGUF file ``plug-lite export`` wrote for a run: the ``quant`` one, or the smallest."""
    report = export_report(run)
    if report is None:
        raise UserError(f"{run}: not exported yet (no {EXPORT_REPORT} with existing files): run plug-lite export")
    files = report["files"]
    if quant:
        if quant.upper() not in files:
            raise UserError(f"{run}: no {quant.upper()} file exported (have {', '.join(files)})")
        return Path(files[quant.upper()]["path"])
    return Path(min(files.values(), key=lambda f: f["bytes"])["path"])


@dataclass(frozen=True)
class WorkFolder:
    """The layout of a work folder (see the module doc). Nothing is created here."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def data_file(self, fmt: str, target: str) -> Path:
        return self.root / "data" / f"train.{fmt}.{target}.jsonl"

    def run_dir(self, fmt: str, target: str) -> Path:
        return self.root / "runs" / run_name(fmt, target)

    @property
    def gguf_dir(self) -> Path:
        return self.root / "gguf"

    def eval_dir(self, target: str) -> Path:
        return self.root / "eval" / target

    def answers_file(self, target: str, eval_set: str, model: str) -> Path:
        """Answers of ``model`` (``plug``, ``mono``, ``base``, ...) to an evaluation set."""
        return self.eval_dir(target) / f"{eval_set}.{model}.jsonl"

    def judge_dir(self, target: str, name: str) -> Path:
        return self.eval_dir(target) / f"judge-{name}"

    def report_dir(self, target: str) -> Path:
        return self.eval_dir(target) / "report"
