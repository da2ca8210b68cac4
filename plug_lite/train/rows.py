"""Step 2, the rows: TRL prompt-completion rows from a JSONL file (``plug-lite data`` writes them)
or from the shipped sample (``--data sample``), checked for shape and cut to ``--max-train-samples``.

A row::

    {"id": ..., "prompt": [{"role": "system", ...}, {"role": "user", ...}],
     "completion": [{"role": "assistant", "content": ...}], "format": "plug", "target": "zh", "pivot": "en"}
"""

from __future__ import annotations

from pathlib import Path

from .. import formats
from ..io import UserError, read_records
from ..spec import PlugSpec
from .config import TrainConfig

__all__ = ["check_source", "load_rows", "rows_spec"]


def check_source(cfg: TrainConfig) -> None:
    """A missing data file is an error before anything is loaded."""
    if cfg.data != "sample" and not Path(cfg.data).is_file():
        raise UserError(f"{cfg.data}: data file not found")


def _check_rows(rows: list[dict], where: str) -> list[dict]:
    """Structural checks of prompt-completion rows; one-line errors naming the row and field."""
    out = []
    for i, r in enumerate(rows):
        loc = r.get("_where") or f"{where}: row {i}"
        for key in ("prompt", "completion"):
            v = r.get(key)
            if not isinstance(v, list) or not v or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in v
            ):
                raise UserError(f"{loc}: field {key!r} must be a non-empty list of {{'role', 'content'}} messages")
        if r["completion"][-1]["role"] != "assistant":
            raise UserError(f"{loc}: field 'completion' must end with an assistant message")
        out.append(
            {
                "id": str(r.get("id", i)),
                "prompt": [{"role": m["role"], "content": m["content"]} for m in r["prompt"]],
                "completion": [{"role": m["role"], "content": m["content"]} for m in r["completion"]],
                "format": str(r.get("format") or ""),
                "target": str(r.get("target") or ""),
                "pivot": str(r.get("pivot") or ""),
                "think": bool(r.get("think")) or formats.THINK_OPEN in r["completion"][-1]["content"][:20],
            }
        )
    return out


def load_rows(cfg: TrainConfig) -> tuple[list[dict], dict]:
    """(rows, data summary) from ``cfg.data``: a JSONL file or ``sample``."""
    if cfg.data == "sample":
        try:
            from .. import data as plug_data
        except ImportError:
            raise UserError("--data sample needs plug_lite.data, which is not in this install; pass --data ROWS.jsonl") from None
        rows, summary = plug_data.sample_rows(PlugSpec(cfg.format, cfg.target, cfg.pivot, cfg.think))
        source = f"sample ({cfg.format}, {cfg.target})"
    else:
        path = Path(cfg.data)
        rows = read_records(path, required=("prompt", "completion"))
        summary, source = {}, str(path)
    if not rows:
        raise UserError(f"{source}: no rows")
    rows = _check_rows(rows, source)
    n_all = len(rows)
    if cfg.max_train_samples is not None:
        rows = rows[: max(1, cfg.max_train_samples)]
    summary = dict(summary or {})
    summary.update(source=source, rows_available=n_all, rows_used=len(rows))
    return rows, summary


def rows_spec(rows: list[dict], cfg: TrainConfig) -> PlugSpec:
    """The run's spec: what its rows say, else the config's."""
    return PlugSpec.from_rows(rows, format=cfg.format, target=cfg.target, pivot=cfg.pivot)
