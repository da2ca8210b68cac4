"""Build SFT data: PLUG / mono / pivot-only rows in TRL's conversational prompt-completion form.

One output row (JSONL)::

    {"id": "...",
     "prompt": [{"role": "system", "content": <PlugSpec(fmt, target, pivot).system_prompt()>},
                {"role": "user", "content": <the instruction in the target language>}],
     "completion": [{"role": "assistant", "content": <formats.render(fmt, ...)>}],
     "format": "plug", "target": "zh", "pivot": "en"}

``pivot_only`` keeps the target-language instruction in the user turn; its completion is the pivot
part only. ``--think`` writes PLUG's ``<think>`` variant; ``--no-system`` leaves the system turn out.

Input, normalised to *parallel records* ``{id, instruction, response, pivot_instruction,
pivot_response}`` (the first two in the target language):

* ``--input FILE``: parallel records (JSON, JSONL or CSV);
* ``--pivot-file F --target-file F``: the paper's way - a pivot-language (English) instruction set
  such as GPT4-Alpaca and its translation, each ``{id, instruction, response}``, joined on ``id``;
* ``--hf-dataset NAME [--hf-split S]``: parallel records from the Hugging Face hub;
* ``--source sample``: the sample shipped with plug_lite (120 parallel records in en/zh/ko/it/es).

Alpaca-style files work as they are: ``output`` is read as ``response`` and a non-empty ``input``
is appended to the instruction after a blank line (``pivot_output`` / ``pivot_input`` likewise).
When no record has an ``id``, ids are the record numbers (0, 1, ...).

Error policy:

* structurally bad input stops with a one-line :class:`~plug_lite.io.UserError` naming file:line
  and field (exit code 2 on the command line): an unreadable file or bad JSON line, a field the
  format needs that is absent from a record, a field that is not text, an unknown language or
  format, no record at all, or no row left after dropping;
* bad individual rows are dropped and counted by reason in the summary: an empty field,
  a duplicate id (the first one is kept), an id found in only one of the two joined files, text
  that contains a PLUG header or think tag (it would teach the model a broken structure).
  ``strict=True`` (``--strict``) turns the first drop into an error instead.

Rows longer than ``--max-length`` tokens are reported, not dropped: the trainer decides what to
do with them (TRL truncates at its ``max_length``).

Standard library only, except the optional token count (transformers, inside the function).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import formats, languages
from .cli import Parser, description, parse, parser_for
from .io import UserError, read_records, refuse_overwrite, run_cli, write_json, write_jsonl
from .spec import FORMATS, PlugSpec

if TYPE_CHECKING:
    from .runs import RunRecord

__all__ = [
    "SAMPLE_DIR",
    "FIELDS",
    "load_sample",
    "sample_rows",
    "join_records",
    "load_source",
    "build_rows",
    "token_stats",
    "HELD_OUT_ROWS",
    "RunRows",
    "run_rows",
    "build",
    "main",
    "cli",
]

SAMPLE_DIR = Path(__file__).resolve().parent / "resources" / "sample"

#: Fields of a parallel record each format needs.
FIELDS: dict[str, tuple[str, ...]] = {
    "plug": ("instruction", "pivot_instruction", "pivot_response", "response"),
    "mono": ("instruction", "response"),
    "pivot_only": ("instruction", "pivot_instruction", "pivot_response"),
}
_ALL_FIELDS = ("instruction", "response", "pivot_instruction", "pivot_response")


# --------------------------------------------------------------------------------------------
# Reading sources


def _text(rec: dict, name: str, where: str, *, input_name: str | None = None) -> str | None:
    """Field ``name`` as text (None when absent); ``input_name`` is Alpaca's extra input."""
    value = rec.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise UserError(f"{where}: field {name!r} must be text, got {type(value).__name__}")
    extra = rec.get(input_name) if input_name else None
    if isinstance(extra, str) and extra.strip():
        value = value.rstrip() + "\n\n" + extra.strip()
    return value


def _normalise(rec: dict, where: str, *, prefix: str = "") -> dict:
    """``{instruction, response}`` (with ``prefix`` "pivot_" the pivot pair) from aliases."""
    out = {}
    out[f"{prefix}instruction"] = _text(rec, f"{prefix}instruction", where, input_name=f"{prefix}input")
    resp = _text(rec, f"{prefix}response", where)
    if resp is None:
        resp = _text(rec, f"{prefix}output", where)
    out[f"{prefix}response"] = resp
    return out


def _with_ids(records: list[dict]) -> list[dict]:
    """Give every record an ``id`` (string). Ids must be on all records or on none."""
    has = [r for r in records if r.get("id") is not None and str(r.get("id")).strip() != ""]
    if not has:
        for i, r in enumerate(records):
            r["id"] = str(i)
        return records
    for r in records:
        if r.get("id") is None:
            raise UserError(f"{r.get('_where', 'record')}: missing field 'id' (other records have one)")
        r["id"] = str(r["id"]).strip()
    return records


def _parallel(records: list[dict], fmt: str) -> list[dict]:
    """Normalise parallel records; a field ``fmt`` needs that is absent is a structural error."""
    out = []
    for r in _with_ids(records):
        where = r.get("_where", f"record {r['id']}")
        rec = {"id": r["id"], "_where": where}
        rec.update(_normalise(r, where))
        rec.update(_normalise(r, where, prefix="pivot_"))
        for f in FIELDS[fmt]:
            if rec.get(f) is None:
                alias = {"response": " (or 'output')", "pivot_response": " (or 'pivot_output')"}.get(f, "")
                raise UserError(f"{where}: missing field {f!r}{alias}")
        out.append(rec)
    return out


def _pair_file(path: str | os.PathLike) -> list[dict]:
    """One side of a pivot/target pair: records with ``id``, ``instruction``, ``response``."""
    recs = read_records(path)
    if not recs:
        raise UserError(f"{path}: no records")
    out = []
    for r in _with_ids(recs):
        rec = {"id": r["id"], "_where": r["_where"]}
        rec.update(_normalise(r, r["_where"]))
        for f in ("instruction", "response"):
            if rec[f] is None:
                raise UserError(f"{r['_where']}: missing field {f!r}" + (" (or 'output')" if f == "response" else ""))
        out.append(rec)
    return out


def _dedupe(records: list[dict], drops: Counter, examples: dict, label: str = "duplicate id") -> list[dict]:
    seen: set[str] = set()
    out = []
    for r in records:
        if r["id"] in seen:
            _drop(drops, examples, label, r)
            continue
        seen.add(r["id"])
        out.append(r)
    return out


def _drop(drops: Counter, examples: dict, reason: str, rec: dict) -> None:
    drops[reason] += 1
    examples.setdefault(reason, [])
    if len(examples[reason]) < 3:
        examples[reason].append(rec.get("_where", rec.get("id")))


def sample_rows(spec: PlugSpec, *, system: bool = True) -> tuple[list[dict], dict]:
    """Rows of the shipped sample for ``spec``, and their summary. A mono row needs no pivot
    text: a mono spec reads the target-language file alone, and its rows record the target as
    their pivot (:func:`load_sample`)."""
    pivot = spec.target if spec.format == "mono" else spec.pivot
    records = load_sample(spec.target, pivot)
    return build_rows(records, fmt=spec.format, target=spec.target, pivot=pivot, think=spec.think, system=system)


def join_records(
    pivot_records: list[dict], target_records: list[dict], *, drops: Counter | None = None,
    examples: dict | None = None,
) -> list[dict]:
    """Parallel records from a pivot set and its translation, joined on ``id`` in the pivot
    set's order. Duplicates (first kept) and ids found on one side only are dropped and counted."""
    drops = Counter() if drops is None else drops
    examples = {} if examples is None else examples
    piv = _dedupe(pivot_records, drops, examples, "duplicate id in the pivot file")
    tgt = _dedupe(target_records, drops, examples, "duplicate id in the target file")
    by_id = {r["id"]: r for r in tgt}
    piv_ids = {r["id"] for r in piv}
    out = []
    for p in piv:
        t = by_id.get(p["id"])
        if t is None:
            _drop(drops, examples, "id only in the pivot file", p)
            continue
        out.append({
            "id": p["id"], "_where": t["_where"],
            "instruction": t["instruction"], "response": t["response"],
            "pivot_instruction": p["instruction"], "pivot_response": p["response"],
        })
    for t in tgt:
        if t["id"] not in piv_ids:
            _drop(drops, examples, "id only in the target file", t)
    return out


def load_sample(target: str, pivot: str = "en") -> list[dict]:
    """Parallel records of the shipped sample for ``target`` (pivot ``pivot``; when both are the
    same language, for ``mono``, the pivot fields repeat the target text)."""
    t, p = languages.get(target).code, languages.get(pivot).code
    have = sorted(f.name.split(".")[1] for f in SAMPLE_DIR.glob("train.*.jsonl"))
    for code in (t, p):
        if code not in have:
            raise UserError(f"no shipped sample for language {code!r}; available: {', '.join(have)}")
    tgt = _pair_file(SAMPLE_DIR / f"train.{t}.jsonl")
    if t == p:
        return [dict(r, pivot_instruction=r["instruction"], pivot_response=r["response"]) for r in tgt]
    return join_records(_pair_file(SAMPLE_DIR / f"train.{p}.jsonl"), tgt)


def load_source(
    *,
    target: str,
    pivot: str = "en",
    fmt: str = "plug",
    source: str | None = None,
    input: str | os.PathLike | None = None,
    pivot_file: str | os.PathLike | None = None,
    target_file: str | os.PathLike | None = None,
    hf_dataset: str | None = None,
    hf_split: str = "train",
    hf_config: str | None = None,
) -> tuple[list[dict], Counter, dict]:
    """Parallel records from exactly one source, plus (drops, drop examples) made while joining."""
    given = [n for n, v in (("source", source), ("input", input), ("pivot_file/target_file", pivot_file or target_file),
                            ("hf_dataset", hf_dataset)) if v]
    if len(given) != 1:
        raise UserError(
            "give exactly one source: --source sample, --input FILE, --pivot-file F --target-file F, "
            f"or --hf-dataset NAME (got {', '.join(given) or 'none'})"
        )
    drops: Counter = Counter()
    examples: dict = {}
    if source is not None:
        if source != "sample":
            raise UserError(f"unknown --source {source!r}; the only built-in source is 'sample'")
        return load_sample(target, pivot), drops, examples
    if input is not None:
        raws = read_records(input)
        if not raws:
            raise UserError(f"{input}: no records")
        return _parallel(raws, fmt), drops, examples
    if pivot_file or target_file:
        if not (pivot_file and target_file):
            raise UserError("--pivot-file and --target-file go together")
        return join_records(_pair_file(pivot_file), _pair_file(target_file), drops=drops, examples=examples), drops, examples
    from .evalsets import hub_records

    raws = hub_records(hf_dataset, split=hf_split, config=hf_config,
                       hint="without the hub, save the dataset as JSONL elsewhere and pass --input FILE")
    if not raws:
        raise UserError(f"Hugging Face dataset {hf_dataset!r} split {hf_split!r}: no records")
    for i, r in enumerate(raws):
        r["_where"] = f"{hf_dataset}[{hf_split}] row {i}"
    return _parallel(raws, fmt), drops, examples


# --------------------------------------------------------------------------------------------
# Rows


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(values), "mean": round(sum(values) / len(values), 1), "max": max(values)}


def build_rows(
    records: list[dict],
    *,
    fmt: str,
    target: str,
    pivot: str = "en",
    think: bool = False,
    system: bool = True,
    strict: bool = False,
) -> tuple[list[dict], dict]:
    """Prompt-completion rows from parallel records; returns ``(rows, summary)``.

    Rows with an empty needed field, a duplicate id or text holding a PLUG header are dropped and
    counted in ``summary["dropped"]`` (``strict=True``: the first one raises instead)."""
    spec = PlugSpec(fmt, target, pivot, think)
    t, p = spec.target, spec.pivot
    sys_prompt = spec.system_prompt() if system else None
    need = FIELDS[fmt]
    drops: Counter = Counter()
    examples: dict = {}
    seen: set[str] = set()
    rows: list[dict] = []
    chars: dict[str, list[int]] = {k: [] for k in need + ("completion",)}
    for rec in records:
        empty = [f for f in need if not isinstance(rec.get(f), str) or not rec[f].strip()]
        reason = None
        if not rec["id"]:
            reason = "empty id"
        elif empty:
            reason = f"empty {empty[0]}"
        elif rec["id"] in seen:
            reason = "duplicate id"
        elif any(formats.has_header(rec[f], target=t, pivot=p, fmt=fmt) for f in need):
            reason = "text contains a PLUG header"
        if reason:
            if strict:
                raise UserError(f"{rec.get('_where', rec['id'])}: {reason} (id {rec['id']!r}; --strict)")
            _drop(drops, examples, reason, rec)
            continue
        seen.add(rec["id"])
        completion = formats.render(
            fmt, target=t, pivot=p, think=think,
            pivot_instruction=rec.get("pivot_instruction"), pivot_response=rec.get("pivot_response"),
            target_response=rec.get("response"),
        )
        prompt = ([{"role": "system", "content": sys_prompt}] if sys_prompt is not None else []) + [
            {"role": "user", "content": rec["instruction"].strip()}
        ]
        rows.append({
            "id": rec["id"], "prompt": prompt,
            "completion": [{"role": "assistant", "content": completion}],
            **spec.row_fields(),
        })
        for f in need:
            chars[f].append(len(rec[f].strip()))
        chars["completion"].append(len(completion))
    summary = {
        **spec.run_fields(), "system": system,
        "rows_in": len(records), "rows_out": len(rows),
        "dropped": dict(drops), "dropped_examples": examples,
        "chars": {k: _stats(v) for k, v in chars.items()},
    }
    return rows, summary


#: Held-out rows a quantized file is scored on by default (:mod:`plug_lite.drift`); when a run's
#: data file is unknown, they are the last rows of the shipped sample and calibration leaves them out.
HELD_OUT_ROWS = 20


@dataclass(frozen=True)
class RunRows:
    """The rows of a finished run's data file: those it trained on and those it left out."""

    trained: list[dict]
    held_out: list[dict]
    source: str  # the data file (or "sample") the rows come from


def _data_file(name: str, run_dir: Path) -> Path | None:
    """A run's ``config.data`` as written at training time: absolute, relative to the current
    folder, or relative to a folder above the run (where training was started)."""
    p = Path(name)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (Path.cwd(), *run_dir.resolve().parents):
        if (base / p).is_file():
            return base / p
    return None


def run_rows(rec: "RunRecord") -> RunRows | None:
    """The rows a run trained on (the first ``max_train_samples`` of its data, as ``train`` takes
    them) and the rest, from its record (:class:`plug_lite.runs.RunRecord`, loaded from its
    folder). None when the run does not say where its data was or the file is gone."""
    cfg = rec.config or {}
    name = cfg.get("data")
    if not name:
        return None
    if name == "sample":
        spec = rec.spec
        rows, _ = sample_rows(spec)
        source = f"the shipped sample ({spec.format}, {spec.target})"
    else:
        path = _data_file(str(name), Path(rec.folder or "."))
        if path is None:
            return None
        rows = read_records(path, required=("prompt", "completion"))
        source = str(path)
    n = cfg.get("max_train_samples")
    n = len(rows) if n is None else max(1, int(n))
    return RunRows(trained=rows[:n], held_out=rows[n:], source=source)


def token_stats(rows: list[dict], tokenizer_dir: str | os.PathLike, max_length: int | None = None) -> dict:
    """Token lengths of rows rendered with the tokenizer's chat template (whole conversation and
    prompt alone), and how many rows exceed ``max_length``."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("--tokenizer needs transformers (pip install 'plug-lite[train]')") from None
    path = Path(tokenizer_dir)
    if not path.is_dir():
        raise UserError(f"{path}: tokenizer folder not found")
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:
        raise UserError(f"{path}: could not load a tokenizer ({' '.join(str(e).split())[:200]})") from None
    if not getattr(tok, "chat_template", None):
        from . import templates

        tok.chat_template = templates.TEMPLATES["chatml"]
        template = "chatml (the tokenizer has none)"
    else:
        template = "the tokenizer's"
    total, prompt_only = [], []
    for r in rows:
        # tokenize=False then encode: the result is a plain list on every transformers version.
        full = tok.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)
        head = tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
        total.append(len(tok(full, add_special_tokens=False)["input_ids"]))
        prompt_only.append(len(tok(head, add_special_tokens=False)["input_ids"]))
    out = {"tokenizer": str(path), "chat_template": template, "total": _stats(total), "prompt": _stats(prompt_only)}
    if max_length is not None:
        out["max_length"] = max_length
        out["over_max_length"] = sum(1 for n in total if n > max_length)
    return out


def build(
    *,
    target: str,
    fmt: str = "plug",
    pivot: str = "en",
    source: str | None = None,
    input: str | os.PathLike | None = None,
    pivot_file: str | os.PathLike | None = None,
    target_file: str | os.PathLike | None = None,
    hf_dataset: str | None = None,
    hf_split: str = "train",
    hf_config: str | None = None,
    think: bool = False,
    system: bool = True,
    strict: bool = False,
    max_samples: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    max_length: int | None = None,
) -> tuple[list[dict], dict]:
    """Load a source and build its rows; nothing is written. Returns ``(rows, summary)``."""
    PlugSpec(fmt, target, pivot, think)  # a bad combination fails before any file is read
    records, join_drops, join_examples = load_source(
        target=target, pivot=pivot, fmt=fmt, source=source, input=input, pivot_file=pivot_file,
        target_file=target_file, hf_dataset=hf_dataset, hf_split=hf_split, hf_config=hf_config,
    )
    if strict and join_drops:
        reason = next(iter(join_drops))
        raise UserError(f"{join_examples[reason][0]}: {reason} (--strict)")
    rows, summary = build_rows(records, fmt=fmt, target=target, pivot=pivot, think=think, system=system, strict=strict)
    rows_in = len(records) + sum(join_drops.values())
    dropped = Counter(join_drops)
    dropped.update(summary["dropped"])
    summary["dropped"] = dict(dropped)
    summary["dropped_examples"] = {**join_examples, **summary["dropped_examples"]}
    summary["rows_in"] = rows_in
    summary["source"] = source or (str(input) if input else None) or (
        f"{pivot_file} + {target_file}" if pivot_file else f"hf:{hf_dataset}[{hf_split}]")
    if max_samples is not None and len(rows) > max_samples:
        summary["limited_by_max_samples"] = len(rows) - max_samples
        rows = rows[: max(0, max_samples)]
    summary["rows_out"] = len(rows)
    if not rows:
        raise UserError(f"{summary['source']}: no usable row left (dropped: {_fmt_drops(summary['dropped']) or 'none'})")
    if tokenizer:
        summary["tokens"] = token_stats(rows, tokenizer, max_length)
    return rows, summary


def _fmt_drops(dropped: dict) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1]))


def format_summary(summary: dict) -> str:
    """The summary as a few human-readable lines."""
    lines = [
        f"{summary['format']} rows, target {summary['target']}, pivot {summary['pivot']}"
        + (", think" if summary["think"] else "") + ("" if summary["system"] else ", no system prompt")
        + f"  (source: {summary.get('source')})",
        f"rows in: {summary['rows_in']}   rows out: {summary['rows_out']}   "
        f"dropped: {sum(summary['dropped'].values())}",
    ]
    for reason, n in sorted(summary["dropped"].items(), key=lambda kv: -kv[1]):
        ex = ", ".join(map(str, summary.get("dropped_examples", {}).get(reason, [])))
        lines.append(f"  dropped {n:>5}  {reason}" + (f"  (e.g. {ex})" if ex else ""))
    if summary.get("limited_by_max_samples"):
        lines.append(f"  left out {summary['limited_by_max_samples']} rows beyond --max-samples")
    lines.append("characters (min / mean / max):")
    for sec, s in summary["chars"].items():
        lines.append(f"  {sec:<18} {s['min']:>6} / {s['mean']:>8} / {s['max']:>6}")
    tok = summary.get("tokens")
    if tok:
        lines.append(f"tokens, {tok['chat_template']} chat template (min / mean / max):")
        for k in ("total", "prompt"):
            s = tok[k]
            lines.append(f"  {k:<18} {s['min']:>6} / {s['mean']:>8} / {s['max']:>6}")
        if "over_max_length" in tok:
            lines.append(f"  rows over --max-length {tok['max_length']}: {tok['over_max_length']}")
    return "\n".join(lines)


def main(
    *,
    target: str,
    out: str | os.PathLike,
    fmt: str = "plug",
    pivot: str = "en",
    source: str | None = None,
    input: str | os.PathLike | None = None,
    pivot_file: str | os.PathLike | None = None,
    target_file: str | os.PathLike | None = None,
    hf_dataset: str | None = None,
    hf_split: str = "train",
    hf_config: str | None = None,
    think: bool = False,
    system: bool = True,
    strict: bool = False,
    max_samples: int | None = None,
    tokenizer: str | os.PathLike | None = None,
    max_length: int | None = None,
) -> dict:
    """Build rows (see :func:`build`), write them atomically to ``out`` and the summary to
    ``out + ".summary.json"``, print the summary and return it. Nothing is written on error.

    Args:
        target: target language code (zh, ko, it, es, ...)
        out: output JSONL (the summary goes to OUT.summary.json)
        fmt: plug, mono or pivot_only
        pivot: pivot language code
        source: the sample shipped with plug_lite (source: give exactly one of --source, --input,
            --pivot-file with --target-file, --hf-dataset)
        input: parallel records (JSON/JSONL/CSV)
        pivot_file: pivot-language records {id, instruction, response}
        target_file: their translation, joined on id
        hf_dataset: a Hugging Face dataset of parallel records
        hf_split: its split
        hf_config: its configuration
        think: PLUG's <think> variant
        system: write the system turn (--no-system leaves it out)
        strict: stop at the first bad row instead of dropping it
        max_samples: keep the first N rows only
        tokenizer: tokenizer folder: report token lengths with its chat template
        max_length: count rows longer than this many tokens
    """
    refuse_overwrite({"--out": out, "the summary": str(out) + ".summary.json"},
                     {"--input": input, "--pivot-file": pivot_file, "--target-file": target_file})
    rows, summary = build(
        target=target, fmt=fmt, pivot=pivot, source=source, input=input, pivot_file=pivot_file,
        target_file=target_file, hf_dataset=hf_dataset, hf_split=hf_split, hf_config=hf_config,
        think=think, system=system, strict=strict, max_samples=max_samples, tokenizer=tokenizer,
        max_length=max_length,
    )
    out = Path(out)
    summary["out"] = str(out)
    write_jsonl(out, rows)
    write_json(str(out) + ".summary.json", summary)
    print(format_summary(summary))
    print(f"wrote {len(rows)} rows to {out}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    ap = Parser(prog="plug-lite data", description="Build PLUG / mono / pivot-only SFT data.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    build_cmd = sub.add_parser("build", help="build prompt-completion JSONL rows", description=description(__doc__))
    parser_for(main, prog="plug-lite data build", parser=build_cmd, names={"fmt": "--format"},
               choices={"fmt": FORMATS, "source": ("sample",)})
    kwargs = parse(ap, main, argv, drop=("cmd",))
    return run_cli(lambda: main(**kwargs) and 0)


if __name__ == "__main__":
    raise SystemExit(cli())
