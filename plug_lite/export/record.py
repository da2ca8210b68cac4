"""Step 5, the report: ``RUN_DIR/export_report.json`` (:data:`plug_lite.runs.EXPORT_REPORT`) and the
summary printed at the end.

The report holds the run and merged folders, how the merge was made, every GGUF file under its
final name with its size and a note on its type, the adapter and base GGUFs (or why the adapter was
not written), the importance matrix (or why none was used), the timings and, after step 3, the
``verify`` section (or its error), with the drift report that the summary prints as a table. It is built
here only (:func:`build_report`), so a typed record can replace the dict in one place; share,
the demo and the notebooks read it through :mod:`plug_lite.runs`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .. import convert, drift
from ..io import write_json
from ..runs import EXPORT_REPORT, DriftReport
from .converting import Written
from .merging import merge_mode

__all__ = ["build_report", "save_report", "print_report"]


def build_report(run: Path, merged: Path, out: Path, written: Written) -> dict:
    """The export report of files staged in ``written``, named by where they will be kept (``out``)."""
    return {
        "run_dir": str(run.resolve()), "merged_dir": str(merged.resolve()),
        "merge": merge_mode(merged),
        "files": {k: {"path": str(out / v.name), "bytes": v.stat().st_size, "note": convert.QUANT_TYPES.get(k, "")}
                  for k, v in written.files.items()},
        "adapter_gguf": str(out / written.adapter.name) if written.adapter else None,
        "adapter_not_written": written.adapter_refused,
        "base_gguf": str(out / written.base.name) if written.base else None,
        "imatrix": written.imatrix.to_value() if written.imatrix else None,
        "timings": written.timings,
    }


def save_report(run: Path, report: dict) -> Path:
    return write_json(run / EXPORT_REPORT, report)


def print_report(report: dict) -> None:
    print("exported:")
    for k, v in report["files"].items():
        print(f"  {k:<7} {v['bytes'] / 2**20:8.1f} MiB  {v['path']}")
        if v["note"]:
            print(f"          {v['note']}")
    if report.get("adapter_not_written"):
        print(f"  adapter not written: {report['adapter_not_written']}")
    if report.get("adapter_gguf"):
        print(f"  adapter {Path(report['adapter_gguf']).stat().st_size / 2**20:8.1f} MiB  {report['adapter_gguf']}")
    v = report.get("verify")
    if v:
        print("parity: template, BOS/EOS, PLUG metadata and prompt tokens match")
        for name, s in v["greedy"].items():
            print(f"  {name:<16} greedy identical to merged on {s['identical_to_merged']}/{s['prompts']} prompts; "
                  f"agreement merged {s['agreement_with_merged']:.2f}, base {s['agreement_with_base']:.2f}")
        print(f"  fine-tune visible on {v['fine_tune_visible_on']}")
        for name, st in v.get("stops", {}).items():
            print(f"  {name:<16} ended its turn on {st['stopped']}/{st['prompts']} held-out prompts "
                  f"within {st['budget']} tokens (answer lengths {st['tokens']})")
        if v.get("drift"):
            rep = DriftReport.from_dict(v["drift"], EXPORT_REPORT)
            print(drift.table(rep))
            print(f"recommended: {rep.recommended or 'none of the files'} (the smallest file within --max-drift "
                  f"{rep.max_drift:g})")
        for w in v["warnings"]:
            print(f"WARNING: {w}", file=sys.stderr)
    im = report.get("imatrix")
    if im:
        print(f"imatrix: {im if isinstance(im, str) else im['note']}")
