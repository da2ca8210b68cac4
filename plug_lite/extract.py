"""Extract the target answer and the pivot sections from model outputs.

``plug-lite extract OUTPUTS.jsonl --target zh [--pivot en] [--format plug] [--field output]
[--out OUT]`` reads a JSON or JSONL file of records, parses the text in ``--field`` with
:func:`plug_lite.formats.parse` and writes the same records with these fields added (the raw
output is kept as it was; :meth:`plug_lite.formats.AnswerRecord.extract_fields`)::

    "extracted": <the answer a user or judge should see>,
    "extract_status": "ok" | "truncated" | "monolingual" | "not_found",
    "pivot_instruction": ..., "pivot_response": ..., "target_response": ...,
    "extract_preamble": ..., "extract_extra": ...

A record may say it was cut by a token limit with ``"finished": false`` or
``"finish_reason": "length"``; it is then parsed with ``finished=False``. The count per status is
printed. Without ``--out`` the result goes to ``<input stem>.extracted.jsonl`` beside the input.
Standard library only.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from . import formats
from .cli import run
from .formats import AnswerRecord
from .io import UserError, read_records, refuse_overwrite, strip_where, write_jsonl
from .spec import FORMATS, PlugSpec

__all__ = ["extract_record", "extract_records", "main", "cli"]


def _finished(rec: dict) -> bool:
    if rec.get("finished") is False:
        return False
    return rec.get("finish_reason") not in ("length", "max_tokens")


def extract_record(rec: dict, *, target: str, pivot: str = "en", fmt: str = "plug", field: str = "output") -> dict:
    """``rec`` with the parsed sections added (a new dict; ``rec`` is not changed)."""
    where = rec.get("_where", "record")
    if field not in rec or rec[field] is None:
        raise UserError(f"{where}: missing field {field!r}")
    text = rec[field]
    if not isinstance(text, str):
        raise UserError(f"{where}: field {field!r} must be text, got {type(text).__name__}")
    parsed = formats.parse(text, target=target, pivot=pivot, fmt=fmt, finished=_finished(rec))
    out = strip_where(rec)
    out.update(AnswerRecord.from_parse(parsed, text).extract_fields())
    return out


def extract_records(records: list[dict], *, target: str, pivot: str = "en", fmt: str = "plug",
                    field: str = "output") -> tuple[list[dict], Counter]:
    """All records extracted, and the count per status."""
    spec = PlugSpec(fmt, target, pivot)
    out = [extract_record(r, field=field, **spec.parser_args()) for r in records]
    counts = Counter({s: 0 for s in formats.STATUSES})
    counts.update(r["extract_status"] for r in out)
    return out, counts


def main(
    file: str | os.PathLike,
    *,
    target: str,
    pivot: str = "en",
    fmt: str = "plug",
    field: str = "output",
    out: str | os.PathLike | None = None,
) -> dict:
    """Extract every record of ``file``, write them to ``out`` (JSONL) and return the status counts.

    Args:
        file: JSON or JSONL file of records holding model outputs
        target: target language code
        pivot: pivot language code
        fmt: plug, mono or pivot_only
        field: the field holding the model's text
        out: output JSONL (default: <file stem>.extracted.jsonl)
    """
    PlugSpec(fmt, target, pivot)
    src = Path(file)
    dest = Path(out) if out else src.with_name(src.stem + ".extracted.jsonl")
    refuse_overwrite({"--out": dest}, {"FILE": src})
    records = read_records(file)
    if not records:
        raise UserError(f"{file}: no records")
    extracted, counts = extract_records(records, target=target, pivot=pivot, fmt=fmt, field=field)
    write_jsonl(dest, extracted)
    total = len(extracted)
    for status in formats.STATUSES:
        n = counts[status]
        print(f"{status:<12} {n:>6}  {100 * n / total:5.1f}%")
    print(f"wrote {total} records to {dest}")
    return {"counts": dict(counts), "total": total, "out": str(dest)}


def cli(argv: list[str] | None = None) -> int:
    return run(main, argv, prog="plug-lite extract", positional=("file",), names={"fmt": "--format"},
               choices={"fmt": FORMATS})


if __name__ == "__main__":
    raise SystemExit(cli())
