"""Check 5 of step 3: how far each quantized file drifts from the reference file, by language.

The run's held-out rows (those it did not train on: :func:`plug_lite.drift.held_out_rows`) are
rendered with the reference file's chat template and evaluated by the reference and by every
quantized file; at each token of the PLUG answer the two next-token distributions are compared
(:mod:`plug_lite.drift`: mean and 99th-percentile KL, top-1 agreement, perplexity ratio), grouped
into the pivot language (instruction and answer) and the target-language answer. The result is a
:class:`plug_lite.runs.DriftReport` (``verify.drift`` in ``export_report.json``), printed as a
table and shown in the model card.

``--max-drift X``: a file whose target-language mean KL exceeds X gets a warning or, with
``--strict-drift``, fails the export. The report recommends the smallest file within X (the
reference has no drift). ``--drift-rows 0`` skips the check.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .. import drift
from ..io import UserError
from ..runs import DriftReport, RunRecord

__all__ = ["DEFAULT_MAX_DRIFT", "DriftError", "check_drift"]

#: Target-language mean KL per token above which a file is flagged (benchmarks/RESULTS.md: on the
#: demo's Gemma-3-270M zh model Q8_0, Q6_K and Q5_K_M stay under it, Q4_K_M and smaller do not,
#: with or without an importance matrix).
DEFAULT_MAX_DRIFT = 0.1


class DriftError(UserError):
    """A quantized file drifts more than ``--max-drift`` under ``--strict-drift``."""


def check_drift(rec: RunRecord, files: dict[str, Path], *, rows: int = drift.DEFAULT_ROWS,
                max_drift: float = DEFAULT_MAX_DRIFT, strict: bool = False) -> DriftReport | None:
    """The drift report of every file of ``files`` after the first (the reference); None when
    there is no quantized file or ``rows`` is 0. With ``strict``, a file over ``max_drift`` raises
    :class:`UserError`."""
    ref_name, ref = next(iter(files.items()))
    quantized = {name: path for name, path in files.items() if name != ref_name}
    if not quantized or rows <= 0:
        return None
    spec = rec.spec
    held, source = drift.held_out_rows(rec, rows=rows)
    text = drift.prepare(held, ref, fmt=spec.format, target=spec.target, pivot=spec.pivot, source=source)
    print(f"drift: {', '.join(quantized)} against {ref_name} on {source}: {text.tokens()} scored tokens",
          file=sys.stderr, flush=True)
    report = drift.report(ref_name, ref, quantized, text, max_drift=max_drift, strict=strict)
    if strict and report.warnings:
        raise DriftError("; ".join(report.warnings) + " (--strict-drift)")
    return report
