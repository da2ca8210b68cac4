"""Step 4, keep or drop, and the command that runs the steps in order (:func:`main`, :func:`cli`).

Everything is written into a hidden staging folder beside the final files (``OUT_DIR/.export.*.tmp``)
and moved under its final name only when the check passed: a failed export leaves no file under a
final name, and no staging folder either; the staging folders a killed export left (named as
ours, older than this process, their process gone) are removed by the next export into the same
folder (:func:`plug_lite.io.staging_folder`). The report is written in both cases (with the
check's error when it failed).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

from .. import convert, toolchain
from ..cli import Parser, description, run
from ..io import UserError, staging_folder
from ..runs import ExportRecord, ParityReport, RunRecord, resolve_base
from ..drift import DEFAULT_ROWS
from . import converting, record
from .check_drift import DEFAULT_MAX_DRIFT, DriftError
from .merging import merge
from .verifying import verify

__all__ = ["DEFAULT_QUANTS", "main", "cli"]

#: What export writes besides the F16 by default: a near-lossless file and the smallest K-quant
#: that stayed within the default --max-drift in the target language with the run's importance
#: matrix on the demo model (benchmarks/RESULTS.md: Q5_K_M 0.043 zh mean KL, Q4_K_M 0.156).
DEFAULT_QUANTS = ("Q8_0", "Q5_K_M")


def _verify(report: ExportRecord, rec: RunRecord, merged: Path, written: converting.Written, **how) -> ExportRecord:
    """Step 3: ``report`` with its ``verify`` section; on failure the report (with the error) is
    saved and nothing is kept."""
    t0 = time.time()
    try:
        parity = verify(rec, merged, written.files, adapter_gguf=written.adapter, base_gguf=written.base, **how)
    except UserError as e:
        dataclasses.replace(report, verify=ParityReport(error=str(e))).save()
        what = "drift" if isinstance(e, DriftError) else "parity"
        raise UserError(f"{what} check failed (no file kept): {e}") from None
    report.timings["verify_s"] = round(time.time() - t0, 1)
    return dataclasses.replace(report, verify=parity)


def main(
    run_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike = "gguf",
    quants: list[str] | tuple[str, ...] = DEFAULT_QUANTS,
    outtype: str = "f16",
    plain_merge: bool = False,
    adapter: bool = True,
    with_base: bool = False,
    verify_parity: bool = True,
    n_prompts: int = 3,
    max_new_tokens: int = 32,
    stop_budget: int = 256,
    imatrix: str = "auto",
    max_drift: float = DEFAULT_MAX_DRIFT,
    strict_drift: bool = False,
    drift_rows: int = DEFAULT_ROWS,
) -> ExportRecord:
    """Export a run; returns its record (also saved as ``RUN_DIR/export_report.json``).

    Args:
        run_dir: a plug-lite train run directory (plug_run.json, adapter/, tokenizer/)
        out_dir: where the GGUF files go
        quants: quant type, repeatable (default Q8_0 and Q5_K_M); see convert.QUANT_TYPES
        outtype: the converter's output: f16, bf16 or q8_0
        plain_merge: QLoRA runs: merge into the original weights, not the NF4-rounded ones
        adapter: write the adapter GGUF too
        with_base: also write the base model's F16 GGUF (for the adapter GGUF)
        verify_parity: check parity
        n_prompts: parity prompts
        max_new_tokens: tokens compared by the parity check
        stop_budget: the stops check: each held-out answer must end its turn within this many tokens
        imatrix: importance matrix for the quantized files: auto (made from the run's training rows
            when llama.cpp's programs are built: make tools), none, a text file to calibrate on, or
            a .gguf/.dat matrix
        max_drift: warn about a quantized file whose mean KL divergence from the reference on the
            target-language answer of held-out rows exceeds this
        strict_drift: fail the export (keep no file) instead of warning
        drift_rows: held-out rows the drift check scores (0: skip it)
    """
    rec = RunRecord.load(run_dir, adapter=True)
    run = rec.folder
    quants, outtype = converting.check_types(quants, outtype)
    converting.check_imatrix(quants, imatrix)
    if strict_drift and (not verify_parity or drift_rows <= 0):
        off = "--no-verify" if not verify_parity else "--drift-rows 0"
        raise UserError(f"--strict-drift needs the drift check, which {off} turns off: drop one of them")
    out = Path(out_dir).resolve()
    base_dir = resolve_base(rec)
    toolchain.script("convert_hf_to_gguf.py")  # fail early (offline, no sdist) before the slow merge
    import llama_cpp  # noqa: F401  (fail early when llama-cpp-python is missing)

    merged = merge(rec, plain=plain_merge)  # step 1
    template = converting.inference_template(merged, run, rec.spec.system_prompt())
    stage = staging_folder(out, "export")  # (after removing what a killed export left there)
    try:
        written = converting.write_ggufs(rec, merged, base_dir, stage, quants=quants, outtype=outtype,  # step 2
                                         template=template, adapter=adapter, with_base=with_base,
                                         imatrix_choice=imatrix)
        report = record.build_record(run, merged, out, written)
        if verify_parity:  # step 3
            report = _verify(report, rec, merged, written, n_prompts=n_prompts, max_new_tokens=max_new_tokens,
                             stop_budget=stop_budget, drift_rows=drift_rows, max_drift=max_drift,
                             strict_drift=strict_drift)
        try:
            previous = ExportRecord.load(run)
        except UserError:
            previous = None
        for replaced in converting.replaced_exports(written, out, previous):
            print(f"export: replacing {replaced}, which another export wrote: the run that made it can no "
                  "longer share it until it is exported again", file=sys.stderr)
        for p in written.paths():  # step 4
            os.replace(p, out / p.name)
        report.save()  # step 5
        record.print_record(report)
        return report
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def cli(argv: list[str] | None = None) -> int:
    """``plug-lite export``: :func:`main`'s flags; the help opens with the package's first line."""
    quants = "; ".join(f"{k}: {v}" for k, v in convert.QUANT_TYPES.items())
    parser = Parser(prog="plug-lite export", description=description(sys.modules[__package__].__doc__))
    return run(main, argv, prog="plug-lite export", parser=parser, positional=("run_dir",),
               names={"quants": "--quant", "verify_parity": "--verify", "n_prompts": "--prompts"},
               choices={"outtype": converting.OUTTYPES},
               extra={"quants": {"metavar": "TYPE", "help": f"quant type, repeatable (default {' and '.join(DEFAULT_QUANTS)}): {quants}"}})
