"""Step 5, the record: ``RUN_DIR/export_report.json`` (:class:`plug_lite.runs.ExportRecord`, which
owns its layout) and the summary printed at the end.

The record holds the run and merged folders, how the merge was made, every GGUF file under its
final name with its size and a note on its type, the adapter and base GGUFs (or why the adapter was
not written), the importance matrix (or why none was used), the timings and, after step 3, the
``verify`` section (or its error), with the drift report the summary prints as a table. Share, the
demo and the notebooks read it through :mod:`plug_lite.runs`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .. import convert, drift
from ..runs import ExportedFile, ExportRecord
from .converting import Written
from .merging import merge_mode

__all__ = ["build_record", "print_record"]


def build_record(run: Path, merged: Path, out: Path, written: Written) -> ExportRecord:
    """The export record of files staged in ``written``, named by where they will be kept (``out``)."""
    return ExportRecord(
        files={k: ExportedFile(out / v.name, v.stat().st_size, convert.QUANT_TYPES.get(k, ""))
               for k, v in written.files.items()},
        run_dir=run.resolve(), merged_dir=merged.resolve(), merge=merge_mode(merged),
        adapter_gguf=out / written.adapter.name if written.adapter else None,
        adapter_not_written=written.adapter_refused,
        base_gguf=out / written.base.name if written.base else None,
        imatrix=written.imatrix,
        timings=written.timings,
        export_id=written.export_id,
        folder=run,
    )


def print_record(rec: ExportRecord) -> None:
    print("exported:")
    for k, f in rec.files.items():
        print(f"  {k:<7} {f.bytes / 2**20:8.1f} MiB  {f.path}")
        if f.note:
            print(f"          {f.note}")
    if rec.adapter_not_written:
        print(f"  adapter not written: {rec.adapter_not_written}")
    if rec.adapter_gguf:
        print(f"  adapter {rec.adapter_gguf.stat().st_size / 2**20:8.1f} MiB  {rec.adapter_gguf}")
    v = rec.verify
    if v:
        print("parity: template, BOS/EOS, PLUG metadata and prompt tokens match; with no system message the "
              "template renders the PLUG prompt the model was trained with")
        for name, s in v.greedy.items():
            print(f"  {name:<16} greedy identical to merged on {s.identical_to_merged}/{s.prompts} prompts; "
                  f"agreement merged {s.agreement_with_merged:.2f}, base {s.agreement_with_base:.2f}")
        print(f"  fine-tune visible on {v.fine_tune_visible_on}")
        for name, st in v.stops.items():
            print(f"  {name:<16} ended its turn on {st.stopped}/{st.prompts} held-out prompts "
                  f"within {st.budget} tokens (answer lengths {st.tokens})")
        if v.drift is not None:
            print(drift.table(v.drift))
            print(f"recommended: {v.drift.recommended or 'none of the files'} (the smallest file within --max-drift "
                  f"{v.drift.max_drift:g})")
        for w in v.warnings:
            print(f"WARNING: {w}", file=sys.stderr)
    if rec.imatrix is not None:
        print(f"imatrix: {rec.imatrix.note}")
