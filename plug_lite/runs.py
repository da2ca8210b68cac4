"""Where things go on disk, what is done, and the records the stages hand each other through the
run folder. Standard library only at import time.

A **run folder** (``plug-lite train`` writes it, ``export`` and ``share`` read it)::

    plug_run.json        written last: its presence means the run finished (RUN_FILE, RunRecord)
    adapter/ tokenizer/ config.yaml metrics.jsonl checkpoints/
    merged/              the merged model (export)
    export_report.json   the exported GGUF files and the checks (EXPORT_REPORT, ExportRecord)
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

The two files of a run folder are typed here, and only here: :class:`RunRecord` is
``plug_run.json`` and :class:`ExportRecord` is ``export_report.json``. Each is read once
(``load``) and written once (``save`` / ``to_dict``), with the JSON keys plug-lite 0.1 wrote, so
a run trained or exported by 0.1 still loads; every other module reads their attributes.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .io import UserError, read_json, write_json
from .languages import LanguageError
from .spec import FORMATS, PlugSpec

__all__ = ["RUN_FILE", "EXPORT_REPORT", "IMATRIX_FILE", "run_name", "is_finished", "FourBit", "RunMetrics", "RunRecord",
           "ExportedFile", "GreedyScore", "StopCount", "ImatrixRecord", "DriftStats", "FileDrift",
           "DriftReport", "ParityReport", "ExportRecord", "resolve_base", "gguf_name",
           "read_export_report", "export_report", "exported_gguf", "WorkFolder"]

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
    obj = read_json(path, missing=missing)  # missing, a folder, not UTF-8, not JSON: one line
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _section(d: dict, key: str, where: str) -> dict:
    """A nested object of a record (absent or null: empty)."""
    value = d.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: field {key!r} must be an object, got {type(value).__name__}")
    return value


def _save(record, run: str | os.PathLike | None, name: str) -> Path:
    folder = Path(run) if run is not None else record.folder
    if folder is None:
        raise ValueError(f"{type(record).__name__}.save: no run folder")
    return write_json(folder / name, record.to_dict())


def _known(cls, d: dict) -> dict:
    """The keys of ``d`` that are fields of the dataclass ``cls``."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


# --------------------------------------------------------------------------------------------
# plug_run.json


@dataclass(frozen=True)
class FourBit:
    """How a QLoRA run's base was quantized to 4 bits (``bnb_4bit``; bitsandbytes' names)."""

    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str | None = None

    def to_dict(self) -> dict:
        return {"quant_type": self.quant_type, "double_quant": self.double_quant, "compute_dtype": self.compute_dtype}


@dataclass(frozen=True)
class RunMetrics:
    """What the training run measured (``metrics``); a field the run did not record is None."""

    train_loss: float | None = None
    final_loss: float | None = None
    first_loss: float | None = None
    steps: int | None = None
    seconds: float | None = None
    tokens: int | None = None
    trained_tokens: int | None = None
    tokens_per_s: float | None = None
    trained_tokens_per_s: float | None = None
    peak_memory_mib: float | None = None
    peak_reserved_mib: float | None = None
    world_size: int | None = None
    device: str | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RunRecord:
    """A finished training run: ``plug_run.json``, written last by ``plug-lite train``.

    ``folder`` is the run folder it was loaded from (None for a record not yet saved); it is not
    written into the file. ``config`` (the :class:`~plug_lite.train.TrainConfig` as a dict),
    ``versions`` (package versions), ``data_summary`` and ``turn_tokens`` are kept as the run
    wrote them: summaries shown as they are, read by no stage field by field.
    """

    spec: PlugSpec
    base_model: str | None = None  # as the user named it: a hub id or a folder
    base_model_path: str | None = None  # the local folder it was loaded from
    base_name: str | None = None  # for file names and the model card, e.g. "Qwen2.5"
    size_label: str | None = None  # e.g. "0.5B"
    backend: str | None = None  # unsloth, qlora, cpu, cpu-qlora
    load_in_4bit: bool | None = None  # None: not recorded
    bnb_4bit: FourBit | None = None
    chat_template_name: str | None = None  # a plug_lite.templates name, or None for the model's own
    eos_token: str | None = None  # the token that ends an assistant turn
    turn_tokens: dict | None = None
    config: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    data_summary: dict = field(default_factory=dict)
    metrics: RunMetrics = field(default_factory=RunMetrics)
    plug_lite_version: str | None = None
    folder: Path | None = field(default=None, compare=False)

    # -- the file
    def to_dict(self) -> dict:
        """The ``plug_run.json`` object: the keys and nesting plug-lite 0.1 writes, in its order."""
        return {
            "plug_lite_version": self.plug_lite_version,
            "base_model": self.base_model,
            "base_model_path": self.base_model_path,
            "base_name": self.base_name,
            "size_label": self.size_label,
            **self.spec.run_fields(),
            "backend": self.backend,
            "load_in_4bit": self.load_in_4bit,
            "bnb_4bit": self.bnb_4bit.to_dict() if self.bnb_4bit else None,
            "chat_template_name": self.chat_template_name,
            "eos_token": self.eos_token,
            "turn_tokens": self.turn_tokens,
            "config": self.config,
            "versions": self.versions,
            "data_summary": self.data_summary,
            "metrics": self.metrics.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = RUN_FILE, *, folder: str | os.PathLike | None = None) -> "RunRecord":
        """The record of a ``plug_run.json`` object (``where`` names it in errors)."""
        for key in ("format", "target"):
            if not d.get(key):
                raise UserError(f"{where}: missing field {key!r}")
        if d["format"] not in FORMATS:
            raise UserError(f"{where}: field 'format' is {d['format']!r}; expected one of {', '.join(FORMATS)}")
        try:
            spec = PlugSpec(d["format"], d["target"], d.get("pivot"), bool(d.get("think")))
        except LanguageError as e:
            raise UserError(f"{where}: {e}") from None
        bnb = _section(d, "bnb_4bit", where)
        return cls(
            spec=spec,
            base_model=d.get("base_model"),
            base_model_path=d.get("base_model_path"),
            base_name=d.get("base_name"),
            size_label=d.get("size_label"),
            backend=d.get("backend"),
            load_in_4bit=d.get("load_in_4bit"),
            bnb_4bit=FourBit(**_known(FourBit, bnb)) if bnb else None,
            chat_template_name=d.get("chat_template_name"),
            eos_token=d.get("eos_token"),
            turn_tokens=_section(d, "turn_tokens", where) if d.get("turn_tokens") is not None else None,
            config=_section(d, "config", where),
            versions=_section(d, "versions", where),
            data_summary=_section(d, "data_summary", where),
            metrics=RunMetrics(**_known(RunMetrics, _section(d, "metrics", where))),
            plug_lite_version=d.get("plug_lite_version"),
            folder=Path(folder) if folder is not None else None,
        )

    @classmethod
    def load(cls, run: str | os.PathLike, *, adapter: bool = False) -> "RunRecord":
        """A finished run's record. ``adapter=True``: a run that can be exported, checked (the
        folder, its base model, its trained adapter)."""
        run = Path(run)
        if adapter and not run.is_dir():
            raise UserError(f"{run}: run directory not found")
        path = run / RUN_FILE
        missing = f"not found (is {run} a plug-lite train run directory?)" if adapter else "not found (the run has not finished)"
        rec = cls.from_dict(_read_json(path, missing), str(path), folder=run)
        if adapter:
            if not rec.base_model:
                raise UserError(f"{path}: missing field 'base_model'")
            if not (run / "adapter" / "adapter_config.json").is_file():
                raise UserError(f"{run / 'adapter'}: no adapter_config.json (no trained adapter in this run directory)")
            if not any((run / "adapter").glob("adapter_model.safetensors")):
                raise UserError(f"{run / 'adapter'}: no adapter_model.safetensors (no trained adapter weights)")
            _check_adapter(rec, run / "adapter")
        return rec

    def save(self, run: str | os.PathLike | None = None) -> Path:
        """Write ``plug_run.json`` into ``run`` (default: :attr:`folder`), atomically."""
        return _save(self, run, RUN_FILE)

    # -- what readers ask
    @property
    def where(self) -> str:
        """The record's file, for messages."""
        return str(self.folder / RUN_FILE) if self.folder is not None else RUN_FILE


def _check_adapter(rec: RunRecord, adapter: Path) -> None:
    """The adapter is whole and fits the run's base model: its config a JSON object, its weights a
    whole safetensors file, and each LoRA A/B matrix as wide / tall as the base weight it adapts
    (an adapter copied from a run on another base is refused here, not by a traceback in the merge).
    Modules the base names otherwise (another transformers' layout) are not compared."""
    _read_json(adapter / "adapter_config.json", "not found")
    shapes = _safetensors_shapes(adapter / "adapter_model.safetensors")
    if not shapes:
        raise UserError(f"{adapter / 'adapter_model.safetensors'}: holds no tensors (no trained adapter weights)")
    try:
        base = resolve_base(rec)
    except UserError:
        return  # the export says so itself, when it needs the base
    base_shapes: dict[str, list] = {}
    for f in sorted(base.glob("*.safetensors")):
        base_shapes.update(_safetensors_shapes(f))
    for name, shape in shapes.items():
        m = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.\w+)?\.weight", name)
        want = base_shapes.get(m.group(1) + ".weight") if m else None
        if want is None or len(want) != 2 or len(shape) != 2:
            continue
        side = 1 if m.group(2) == "A" else 0  # A is r x in, B is out x r
        if shape[side] != want[side]:
            raise UserError(f"{adapter}: does not fit the base model {base}: {m.group(1)} is {want[0]}x{want[1]} there, "
                            f"the adapter's lora_{m.group(2)} is {shape[0]}x{shape[1]} (trained on another base?)")


def _safetensors_shapes(path: Path) -> dict[str, list]:
    """Tensor name -> shape, from a ``.safetensors`` file's header (8 bytes of length, then JSON);
    a one-line error when the file is not a whole safetensors file (empty, cut short, another format)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n < 2 or 8 + n > size or n > 100 << 20:
            raise UserError(f"{path}: not a safetensors file, or cut short ({size} bytes)")
        try:
            header = json.loads(f.read(n))
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
            shapes = {k: list(v["shape"]) for k, v in tensors.items()}
        except (ValueError, UnicodeDecodeError, AttributeError, KeyError, TypeError, IndexError):
            raise UserError(f"{path}: not a safetensors file (its header is not a table of tensors)") from None
    if 8 + n + end != size:
        raise UserError(f"{path}: cut short or padded: its header describes {8 + n + end} bytes, the file holds {size}")
    return shapes


def resolve_base(rec: RunRecord) -> Path:
    """The local folder of the run's base model: ``base_model_path``, ``base_model`` as a path,
    or the Hugging Face cache (offline lookup only)."""
    for cand in (rec.base_model_path, rec.base_model):
        if cand and (Path(cand) / "config.json").is_file():
            return Path(cand)
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(rec.base_model, local_files_only=True))
        if (path / "config.json").is_file():
            return path
    except Exception:  # not a repo id, not cached, or huggingface_hub missing
        pass
    raise UserError(
        f"{rec.where}: base model {rec.base_model!r} not found "
        f"(base_model_path {rec.base_model_path!r} has no config.json and it is not in the Hugging Face cache)"
    )


def gguf_name(rec: RunRecord, quant: str, *, kind: str = "model") -> str:
    """``<Base>-<Size>-PLUG-<target>-<QUANT>.gguf`` for a run (``kind="adapter"``:
    ``...-LoRA-<QUANT>``, ``kind="base"``: the untuned base, ``<Base>-<Size>-<QUANT>.gguf``)."""
    base = rec.base_name or Path(str(rec.base_model).rstrip("/")).name
    parts = [base.replace(" ", "-")]
    if rec.size_label:
        parts.append(str(rec.size_label))
    if kind != "base":
        parts += [_FORMAT_TAG.get(rec.spec.format, rec.spec.format), rec.spec.target]
        if kind == "adapter":
            parts.append("LoRA")
    parts.append(quant.upper())
    return "-".join(parts) + ".gguf"


# --------------------------------------------------------------------------------------------
# export_report.json


@dataclass(frozen=True)
class ExportedFile:
    """One GGUF file ``plug-lite export`` wrote (``files.<QUANT>``)."""

    path: Path
    bytes: int
    note: str = ""

    def to_dict(self) -> dict:
        return {"path": str(self.path), "bytes": self.bytes, "note": self.note}


@dataclass(frozen=True)
class GreedyScore:
    """Greedy answers of one model file against the merged model and the base (``verify.greedy``)."""

    identical_to_merged: int
    prompts: int
    agreement_with_merged: float
    agreement_with_base: float
    text: str = ""
    closer_to_base_on: int | None = None  # quantized files, when the fine-tune changed any answer

    def to_dict(self) -> dict:
        d = {"identical_to_merged": self.identical_to_merged, "prompts": self.prompts,
             "agreement_with_merged": self.agreement_with_merged, "agreement_with_base": self.agreement_with_base,
             "text": self.text}
        if self.closer_to_base_on is not None:
            d["closer_to_base_on"] = self.closer_to_base_on
        return d


@dataclass(frozen=True)
class StopCount:
    """How many held-out answers of one model ended their turn within ``budget`` tokens
    (``verify.stops``)."""

    stopped: int
    prompts: int
    budget: int
    tokens: list[int] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)  # the end-of-generation tokens they ended with (text)

    def to_dict(self) -> dict:
        d = {"stopped": self.stopped, "prompts": self.prompts, "budget": self.budget, "tokens": list(self.tokens)}
        if self.ends:
            d["ends"] = list(self.ends)
        return d


@dataclass(frozen=True)
class ImatrixRecord:
    """The importance matrix the quantized files were made with (``imatrix``), or why none was.

    plug-lite 0.1 wrote one sentence here; it loads as a record with only ``note``."""

    note: str  # what was done, or why no matrix was used
    file: Path | None = None
    source: str | None = None  # the calibration text: the run's rows, a text file, or a given matrix
    tokens: int | None = None  # tokens the matrix was collected over (whole chunks of ``ctx``)
    chunks: int | None = None
    ctx: int | None = None
    seconds: float | None = None  # to make it (None: given, not made)
    reused: bool = False  # made by an earlier export from the same reference and text

    @property
    def used(self) -> bool:
        return self.file is not None

    def to_value(self) -> dict | str:
        """The ``imatrix`` value: the sentence alone when no matrix was used (as 0.1 wrote it)."""
        if not self.used:
            return self.note
        return {"note": self.note, "file": _text(self.file), "source": self.source, "tokens": self.tokens,
                "chunks": self.chunks, "ctx": self.ctx, "seconds": self.seconds, "reused": self.reused}

    @classmethod
    def from_value(cls, value, where: str) -> "ImatrixRecord | None":
        if value is None:
            return None
        if isinstance(value, str):  # plug-lite 0.1
            return cls(note=value)
        if not isinstance(value, dict):
            raise UserError(f"{where}: field 'imatrix' must be an object or a sentence, got {type(value).__name__}")
        kept = _known(cls, value)
        return cls(**{**kept, "note": str(kept.get("note") or ""), "file": _path(kept.get("file"))})


@dataclass(frozen=True)
class DriftStats:
    """The drift of a quantized file from its reference on one group of scored tokens (a section
    of the PLUG answer, a language, or all of them): mean and 99th-percentile KL(reference || file)
    per token, how often both put the same token first, exp(mean NLL difference) on the text's own
    next tokens. Only ``tokens`` when none was scored."""

    tokens: int
    kl_mean: float | None = None
    kl_p99: float | None = None
    top1: float | None = None
    ppl_ratio: float | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _drift_stats(d) -> DriftStats:
    return DriftStats(**_known(DriftStats, d if isinstance(d, dict) else {"tokens": 0}))


@dataclass(frozen=True)
class FileDrift:
    """One quantized file against the reference (``verify.drift.files.<QUANT>``)."""

    languages: dict[str, DriftStats]  # the pivot and the target language
    sections: dict[str, DriftStats]  # pivot_instruction, pivot_response, target
    all: DriftStats
    bytes: int | None = None
    bits_per_weight: float | None = None
    fallbacks: int | None = None  # tensors that got another type (rows not a multiple of 256 wide)
    quantized_tensors: int | None = None
    seconds: float | None = None

    def kl(self, lang: str) -> float | None:
        """Mean KL on ``lang`` (on every scored token when that language was not scored)."""
        return (self.languages.get(lang) or self.all).kl_mean

    def to_dict(self) -> dict:
        return {"languages": {k: v.to_dict() for k, v in self.languages.items()},
                "sections": {k: v.to_dict() for k, v in self.sections.items()}, "all": self.all.to_dict(),
                "bytes": self.bytes, "bits_per_weight": self.bits_per_weight, "fallbacks": self.fallbacks,
                "quantized_tensors": self.quantized_tensors, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "FileDrift":
        rest = _known(cls, {k: v for k, v in d.items() if k not in ("languages", "sections", "all")})
        return cls(languages={k: _drift_stats(v) for k, v in _section(d, "languages", where).items()},
                   sections={k: _drift_stats(v) for k, v in _section(d, "sections", where).items()},
                   all=_drift_stats(d.get("all")), **rest)


@dataclass(frozen=True)
class DriftReport:
    """How far each quantized file drifts from the reference file on held-out PLUG text, by
    language (``verify.drift``; :mod:`plug_lite.export.check_drift`). ``recommended`` is the
    smallest file, the reference included, whose target-language mean KL is within ``max_drift``;
    ``warnings`` name the files over it."""

    reference: str  # its quant type, e.g. F16
    text: str  # where the held-out rows come from
    rows: int
    tokens: dict[str, int]  # scored tokens per section
    target: str
    pivot: str | None
    max_drift: float
    strict: bool = False
    reference_bytes: int | None = None
    files: dict[str, FileDrift] = field(default_factory=dict)
    recommended: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"reference": self.reference, "reference_bytes": self.reference_bytes, "text": self.text,
                "rows": self.rows, "tokens": dict(self.tokens), "target": self.target, "pivot": self.pivot,
                "max_drift": self.max_drift, "strict": self.strict,
                "files": {k: v.to_dict() for k, v in self.files.items()}, "recommended": self.recommended,
                "warnings": list(self.warnings)}

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "DriftReport":
        try:
            return cls(reference=str(d["reference"]), reference_bytes=d.get("reference_bytes"),
                       text=str(d.get("text") or ""), rows=int(d.get("rows") or 0),
                       tokens=dict(_section(d, "tokens", where)), target=str(d["target"]), pivot=d.get("pivot"),
                       max_drift=float(d["max_drift"]), strict=bool(d.get("strict")),
                       files={k: FileDrift.from_dict(v, where) for k, v in _section(d, "files", where).items()},
                       recommended=d.get("recommended"), warnings=list(d.get("warnings") or []))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"{where}: field 'verify.drift' is malformed ({e})") from None


@dataclass(frozen=True)
class ParityReport:
    """The export's checks (``verify``): ``error`` says why they failed (then nothing else is set)."""

    checks: dict = field(default_factory=dict)  # check name -> "ok", and the EOS id and text checked
    greedy: dict[str, GreedyScore] = field(default_factory=dict)
    stops: dict[str, StopCount] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    fine_tune_visible_on: str | None = None
    adapter_note: str | None = None
    merged_text: str | None = None
    drift: DriftReport | None = None  # the quantized files against the reference (None: not measured)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"error": self.error}
        d: dict[str, Any] = {"checks": self.checks, "greedy": {k: v.to_dict() for k, v in self.greedy.items()},
                             "stops": {k: v.to_dict() for k, v in self.stops.items()}, "warnings": list(self.warnings),
                             "fine_tune_visible_on": self.fine_tune_visible_on}
        if self.adapter_note is not None:
            d["adapter_note"] = self.adapter_note
        d["merged_text"] = self.merged_text
        if self.drift is not None:
            d["drift"] = self.drift.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "ParityReport":
        if "error" in d:
            return cls(error=str(d["error"]))
        try:
            return cls(
                checks=_section(d, "checks", where),
                greedy={k: GreedyScore(**_known(GreedyScore, v)) for k, v in _section(d, "greedy", where).items()},
                stops={k: StopCount(**_known(StopCount, v)) for k, v in _section(d, "stops", where).items()},
                warnings=list(d.get("warnings") or []),
                fine_tune_visible_on=d.get("fine_tune_visible_on"),
                adapter_note=d.get("adapter_note"),
                merged_text=d.get("merged_text"),
                drift=DriftReport.from_dict(d["drift"], where) if d.get("drift") is not None else None,
            )
        except (TypeError, AttributeError) as e:
            raise UserError(f"{where}: field 'verify' is malformed ({e})") from None


@dataclass(frozen=True)
class ExportRecord:
    """What ``plug-lite export`` wrote: ``export_report.json`` in the run folder.

    ``files`` maps a quant type (``F16``, ``Q8_0``, ...) to its file; ``verify`` is None when the
    checks were not run. ``export_id`` is written into every GGUF of the export that carries PLUG
    keys (:data:`~plug_lite.spec.EXPORT_KEY`; None in reports written before it existed).
    ``folder`` is the run folder it was loaded from (not written).
    """

    files: dict[str, ExportedFile]
    run_dir: Path | None = None
    merged_dir: Path | None = None
    merge: str | None = None  # "nf4" or "plain"
    adapter_gguf: Path | None = None
    adapter_not_written: str | None = None  # why no adapter GGUF was written
    base_gguf: Path | None = None
    imatrix: ImatrixRecord | None = None
    timings: dict = field(default_factory=dict)  # step -> seconds
    verify: ParityReport | None = None
    export_id: str | None = None
    folder: Path | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        """The ``export_report.json`` object: the keys and nesting plug-lite 0.1 writes (and
        ``export_id`` when there is one)."""
        d: dict[str, Any] = {
            "run_dir": _text(self.run_dir), "merged_dir": _text(self.merged_dir), "merge": self.merge,
            "files": {k: f.to_dict() for k, f in self.files.items()},
            "adapter_gguf": _text(self.adapter_gguf), "adapter_not_written": self.adapter_not_written,
            "base_gguf": _text(self.base_gguf), "imatrix": self.imatrix.to_value() if self.imatrix else None, "timings": self.timings,
        }
        if self.verify is not None:
            d["verify"] = self.verify.to_dict()
        if self.export_id is not None:
            d["export_id"] = self.export_id
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = EXPORT_REPORT, *, folder: str | os.PathLike | None = None) -> "ExportRecord":
        try:
            files = {k: ExportedFile(Path(v["path"]), int(v.get("bytes") or 0), v.get("note") or "")
                     for k, v in _section(d, "files", where).items()}
        except (KeyError, TypeError, AttributeError, ValueError):
            raise UserError(f"{where}: field 'files' must map a quant type to {{path, bytes, note}}") from None
        verify = d.get("verify")
        export_id = d.get("export_id")
        if export_id is not None and not isinstance(export_id, str):
            raise UserError(f"{where}: field 'export_id' must be a string")
        return cls(
            files=files,
            run_dir=_path(d.get("run_dir")),
            merged_dir=_path(d.get("merged_dir")),
            merge=d.get("merge"),
            adapter_gguf=_path(d.get("adapter_gguf")),
            adapter_not_written=d.get("adapter_not_written"),
            base_gguf=_path(d.get("base_gguf")),
            imatrix=ImatrixRecord.from_value(d.get("imatrix"), where),
            timings=_section(d, "timings", where),
            verify=ParityReport.from_dict(_section(d, "verify", where), where) if verify is not None else None,
            export_id=export_id,
            folder=Path(folder) if folder is not None else None,
        )

    @classmethod
    def load(cls, run: str | os.PathLike) -> "ExportRecord":
        """A run's export report; a one-line error when the run was not exported."""
        path = Path(run) / EXPORT_REPORT
        return cls.from_dict(_read_json(path, f"not found; run `plug-lite export {run}` first"), str(path), folder=run)

    def save(self, run: str | os.PathLike | None = None) -> Path:
        """Write ``export_report.json`` into ``run`` (default: :attr:`folder`), atomically."""
        return _save(self, run, EXPORT_REPORT)

    # -- what readers ask
    @property
    def done(self) -> bool:
        """The export finished: its checks did not fail and every file it lists exists."""
        if not self.files or (self.verify is not None and not self.verify.passed):
            return False
        return all(f.path.is_file() for f in self.files.values())

    def smallest(self) -> ExportedFile:
        return min(self.files.values(), key=lambda f: f.bytes)


def _path(value) -> Path | None:
    return Path(value) if value else None


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None


def read_export_report(run: str | os.PathLike) -> ExportRecord:
    """A run's ``export_report.json``; a one-line error when the run was not exported."""
    return ExportRecord.load(run)


def export_report(run: str | os.PathLike, quant: str | None = None) -> ExportRecord | None:
    """The run's export report when its export is done: the parity check passed, every file it
    lists still exists and, with ``quant``, that quant type is among them. Else None (so a step
    re-run after a disconnect skips work that is done)."""
    try:
        report = ExportRecord.load(run)
    except UserError:
        return None
    if not report.done or (quant is not None and quant.upper() not in report.files):
        return None
    return report


def exported_gguf(run: str | os.PathLike, quant: str | None = None) -> Path:
    """The GGUF file ``plug-lite export`` wrote for a run: the ``quant`` one, or the smallest."""
    report = export_report(run)
    if report is None:
        raise UserError(f"{run}: not exported yet (no {EXPORT_REPORT} with existing files): run plug-lite export")
    if quant:
        if quant.upper() not in report.files:
            raise UserError(f"{run}: no {quant.upper()} file exported (have {', '.join(report.files)})")
        return report.files[quant.upper()].path
    return report.smallest().path


# --------------------------------------------------------------------------------------------
# The work folder


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
