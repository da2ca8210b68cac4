"""Step 2, convert: the GGUF files of a run, all written into the export's staging folder.

1. The merged folder goes through llama.cpp's converter (:func:`plug_lite.convert.hf_to_gguf`) to
   F16 (or BF16, or Q8_0 directly), and the file is rewritten with llama.cpp's own gguf-py to add
   the inference chat template, with the run's PLUG system prompt as its default
   (:func:`inference_template`), and the PLUG keys (``plug.format``,
   ``plug.target``, ``plug.pivot``, ``plug.think``), so ``plug-lite chat`` needs no flags. This
   file is the reference of the checks.
2. The importance matrix (``--imatrix``, :func:`plug_lite.imatrix.for_run`): with ``auto``, made
   from the run's training rows rendered with that file's template when a quant type uses one and
   llama.cpp's programs are built (``make tools``), kept as ``RUN_DIR/imatrix.gguf`` and reused;
   without the programs none is made, and the record says so.
3. Each quant type is made from that file (:func:`plug_lite.convert.quantize`: in-process, or
   ``llama-quantize`` with the matrix; llama.cpp's log held back unless it fails). The quantizer
   copies every key: checked on the output, and the keys are written again if one is missing.
4. The adapter GGUF (llama.cpp's ``convert_lora_to_gguf.py``): a few MB, used with
   ``llama_cpp.Llama(base.gguf, lora_path=...)``. A run that trained embedding rows of turn tokens
   (``turn_tokens`` in ``plug_run.json``) gets none (:func:`adapter_refusal`).
5. ``--with-base``: the base's F16 GGUF, for the adapter GGUF.

:mod:`plug_lite.convert` stays a library outside this package: the demo converts the base model
with it, and the chat, generate and judge tests and the benchmarks make their GGUFs with it.

File names follow the ggml convention (:func:`plug_lite.runs.gguf_name`):
``<Base>-<Size>-PLUG-<lang>-<QUANT>.gguf`` (``Mono`` / ``PivotOnly`` for the other formats,
``...-LoRA-F16.gguf`` for the adapter, ``<Base>-<Size>-F16.gguf`` for the base).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import convert, gguf_meta, imatrix, templates, toolchain
from ..io import UserError, keep_umask
from ..runs import ExportRecord, ImatrixRecord, RunRecord, gguf_name
from ..spec import EXPORT_KEY, PLUG_KEYS

__all__ = ["OUTTYPES", "Written", "check_types", "check_imatrix", "inference_template", "adapter_refusal", "write_ggufs"]

#: What the converter may write as the reference file.
OUTTYPES = ("f16", "bf16", "q8_0")


@dataclass
class Written:
    """The GGUF files of one export, in the staging folder, and how long each took."""

    files: dict[str, Path] = field(default_factory=dict)  # quant type -> file; the reference file first
    #: written into each file with PLUG keys and into the record: a file replaced later by another
    #: export no longer matches (see :func:`replaced_exports`)
    export_id: str = field(default_factory=lambda: secrets.token_hex(8))
    adapter: Path | None = None
    base: Path | None = None
    adapter_refused: str | None = None  # why no adapter GGUF was written
    imatrix: ImatrixRecord | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [p for p in (*self.files.values(), self.adapter, self.base) if p is not None]


def replaced_exports(written: Written, out: Path, previous: ExportRecord | None) -> list[str]:
    """The files already in ``out`` that this export is about to replace although its run did not
    write them (another run's export under the same name, or a file put there by hand), each as
    ``"PATH (why)"``. ``previous``: the run's own last export record, if any. The untuned base's
    file is left out: two runs of one base write the same bytes."""
    mine = previous.export_id if previous else None
    listed = set()  # a report written before export ids: the files it lists are the run's own
    if previous and mine is None:
        listed = {f.resolve() for f in [*(x.path for x in previous.files.values()), previous.adapter_gguf] if f}
    out_list = []
    for p in [p for p in (*written.files.values(), written.adapter) if p is not None]:
        dst = out / p.name
        if not dst.is_file():
            continue
        try:
            owner = gguf_meta.read_metadata(dst).get(EXPORT_KEY)
        except UserError:
            owner = None
        if owner is not None and owner == mine:
            continue
        if owner is None and dst.resolve() in listed:
            continue
        out_list.append(f"{dst} ({'export ' + owner if owner else 'no export id'})")
    return out_list


def check_types(quants, outtype: str) -> tuple[list[str], str]:
    """The quant types (upper case, each once) and the converter's output type, checked."""
    out = []
    for q in quants:
        key = q.upper()
        if key not in convert.QUANT_TYPES:
            raise UserError(f"unknown quant type {q!r}; expected one of {', '.join(convert.QUANT_TYPES)}")
        if key not in out:
            out.append(key)
    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        raise UserError(f"unknown --outtype {outtype!r}; expected f16, bf16 or q8_0")
    if outtype == "q8_0" and any(q != "Q8_0" for q in out):
        raise UserError("--outtype q8_0 writes the Q8_0 file directly; other quant types need an f16/bf16 file")
    return out, outtype


def inference_template(merged: Path, run: Path, system_prompt: str) -> str:
    """The chat template written into every GGUF: the one saved with the run's tokenizer, with the
    run's PLUG system prompt as the default of a conversation that has none
    (:func:`plug_lite.templates.with_default_system`), so llama.cpp's server, LM Studio or any client
    that sends no system message renders the prompt the model was trained with."""
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(str(merged)).chat_template
    if not template:
        raise UserError(f"{run / 'tokenizer'}: no chat template saved with the run's tokenizer")
    return templates.with_default_system(template, system_prompt)


def adapter_refusal(adapter_dir: Path) -> str | None:
    """Why the adapter cannot become a llama.cpp LoRA GGUF, or None when it can.

    llama.cpp's adapter format holds LoRA A/B pairs only; the rows a run trains with PEFT's
    trainable tokens (the turn tokens of a base model: ``turn_tokens`` in ``plug_run.json``) are full
    embedding rows, and its converter stops on them. An adapter without them would lose what made
    the model stop, so none is written."""
    cfg_path = adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    rows = cfg.get("trainable_token_indices")
    if not rows:
        return None
    ids = sorted({i for v in (rows.values() if isinstance(rows, dict) else [rows]) for i in v})
    return (f"the run trained the embedding rows of tokens {ids} (turn tokens the base had not learned), which a "
            "llama.cpp LoRA adapter cannot carry; use the merged GGUF files")


def _with_plug_metadata(dst: Path, plug: dict, write_raw: Callable[[Path], object]) -> Path:
    """``write_raw(raw)`` writes a GGUF beside ``dst``; ``dst`` is that file with the PLUG keys."""
    raw = dst.with_name(f".{dst.name}.raw")
    try:
        write_raw(raw)
        gguf_meta.write_plug_metadata(raw, dst, **plug)
    finally:
        raw.unlink(missing_ok=True)
    return dst


def check_imatrix(quants: list[str], choice: str) -> None:
    """Refuse, before any slow step, quant types that need an importance matrix when none will
    be there (``--imatrix none``, or ``auto`` without llama.cpp's programs), and an ``--imatrix
    FILE`` that is not there or whose programs are not, when a quant type would use it."""
    if str(choice).lower() not in ("auto", "none") and any(convert.uses_imatrix(q) for q in quants):
        imatrix.check_file_choice(choice)
    need = [q for q in quants if convert.needs_imatrix(q)]
    if not need:
        return
    if str(choice).lower() == "none":
        raise UserError(f"{', '.join(need)} need an importance matrix: drop --imatrix none or pick another type")
    missing = [t for t in ("llama-imatrix", "llama-quantize") if toolchain.find_tool(t) is None]
    if str(choice).lower() == "auto" and missing:
        raise UserError(f"{', '.join(need)} need an importance matrix, which needs llama.cpp's {' and '.join(missing)} "
                        f"(llama-cpp-python cannot collect one): {toolchain.tools_status()['hint']}")


def _imatrix(rec: RunRecord, ref: Path, quants: list[str], choice: str, timings: dict) -> ImatrixRecord:
    """The matrix for the quant types that use one (:func:`plug_lite.imatrix.for_run`)."""
    if not any(convert.uses_imatrix(q) for q in quants):
        return ImatrixRecord(note=f"not needed ({', '.join(quants) or 'no quantized file'}: no quant type that uses one)")
    t0 = time.time()
    made = imatrix.for_run(rec, ref, choice)
    if made.used:
        timings["imatrix_s"] = round(time.time() - t0, 1)
    print(f"imatrix: {made.note}", file=sys.stderr)
    return made


def _quantize(ref: Path, dst: Path, q: str, plug: dict, timings: dict, matrix: Path | None = None) -> Path:
    matrix = matrix if convert.uses_imatrix(q) else None
    print(f"quantize: {q} -> {dst}  ({convert.QUANT_TYPES[q]}{', importance matrix' if matrix else ''})", file=sys.stderr)
    t0 = time.time()
    with _quiet_stderr(f"quantizing to {q}"):
        convert.quantize(ref, dst, q, imatrix=matrix)
    timings[f"quantize_{q}_s"] = round(time.time() - t0, 1)
    md = gguf_meta.read_metadata(dst)
    if (any(md.get(k) is None for k in PLUG_KEYS) or md.get("tokenizer.chat_template") != plug["chat_template"]
            or md.get(EXPORT_KEY) != plug["export_id"]):
        gguf_meta.write_plug_metadata(dst, dst, **plug)  # the quantizer dropped keys: add them back
    return dst


def write_ggufs(rec: RunRecord, merged: Path, base_dir: Path, stage: Path, *, quants: list[str], outtype: str,
                template: str, adapter: bool, with_base: bool, imatrix_choice: str = "auto") -> Written:
    """Steps 1-5 above, into ``stage``; the files are made readable by all (they are meant to be shared)."""
    run = rec.folder
    w = Written()
    plug = dict(spec=rec.spec, chat_template=template, export_id=w.export_id)
    ref_key = outtype.upper()
    ref = stage / gguf_name(rec, ref_key)
    t0 = time.time()
    print(f"convert: {merged} -> {ref} ({ref_key})", file=sys.stderr)
    w.files[ref_key] = _with_plug_metadata(
        ref, plug, lambda raw: convert.hf_to_gguf(merged, raw, outtype=outtype, model_name=ref.stem))
    w.timings["convert_s"] = round(time.time() - t0, 1)
    quantized = [q for q in quants if q != ref_key]
    w.imatrix = _imatrix(rec, ref, quantized, imatrix_choice, w.timings)
    for q in quantized:
        w.files[q] = _quantize(ref, stage / gguf_name(rec, q), q, plug, w.timings, w.imatrix.file)
    w.adapter_refused = adapter_refusal(run / "adapter") if adapter else None
    if w.adapter_refused:
        print(f"adapter: not written: {w.adapter_refused}", file=sys.stderr)
    elif adapter:
        w.adapter = stage / gguf_name(rec, "F16", kind="adapter")
        print(f"adapter: {run / 'adapter'} -> {w.adapter}", file=sys.stderr)
        t0 = time.time()
        _with_plug_metadata(w.adapter, plug, lambda raw: convert.lora_to_gguf(run / "adapter", base_dir, raw))
        w.timings["adapter_s"] = round(time.time() - t0, 1)
    if with_base:
        w.base = stage / gguf_name(rec, "F16", kind="base")
        print(f"base: {base_dir} -> {w.base}", file=sys.stderr)
        t0 = time.time()
        convert.hf_to_gguf(base_dir, w.base, outtype="f16")
        w.timings["base_convert_s"] = round(time.time() - t0, 1)
    for p in w.paths():  # files made through temporary names: give them the user's umask
        keep_umask(p)
    return w


@contextlib.contextmanager
def _quiet_stderr(what: str):
    """Hold back llama.cpp's C-level log (printed to fd 2) unless ``what`` fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            tail = log.read().decode("utf-8", "replace").strip().splitlines()[-20:]
            print(f"{what}: llama.cpp log tail:\n" + "\n".join(tail), file=sys.stderr)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)

