"""Evaluation sets: X-AlpacaEval, X-TruthfulQA, X-SVAMP (hub or local file) and the shipped sample.

Every loader returns the same record shape, so generation and judging never care where the
questions came from::

    {"id": str, "instruction": str, "lang": "zh", "dataset": str, "category": str,
     ...task fields: "answer" (X-SVAMP), "correct_answers" / "incorrect_answers" /
        "best_answer" (X-TruthfulQA)}

Sources, chosen by ``name_or_path``:

* ``"sample"`` - the 40 instructions per language shipped in ``plug_lite/resources/sample``;
* ``"x-alpacaeval"``, ``"x-truthfulqa"``, ``"x-svamp"`` (or the full hub names below) - a real
  ``datasets.load_dataset`` call; without the hub this is a one-line error saying how to pass a
  local file instead;
* a path to a local file (one language per file): JSON or JSON lines (told apart by the content,
  not the extension), CSV or TSV (with a header row, or without one: ``question<TAB>answer`` as
  MGSM ships it), in the hub schema or in a publisher's own layout (below).

Hub layout. X-AlpacaEval (``zhihz0535/X-AlpacaEval``) has one split per language named in
English (``english``, ``chinese``, ``korean``, ``italian``, ``spanish``); records ``id``,
``dataset``, ``instruction`` and sometimes ``category``. For X-TruthfulQA and X-SVAMP the hub
cards could not be read from here. What is known comes from the PLUG authors' evaluation code
(github.com/ytyz1307zzh/PLUG, ``src/evaluate/{truthfulqa,svamp}``): per-language files
``<lang>/truthfulqa_<lang>.json`` / ``<lang>/svamp_<lang>.json`` whose records carry ``id``,
``instruction``, ``correct_answers``, ``incorrect_answers`` (TruthfulQA) and ``id``,
``instruction``, ``answer`` (SVAMP). The loader therefore tries the X-AlpacaEval layout
(split named after the language) and then a per-language config, and accepts the original
benchmarks' field names too (``question`` / ``Question`` + ``Body``, ``Answer``,
``best_answer``...), normalising them to the record above.

Publishers' own layouts, read as they ship them:

* ids: ``id``, ``ID`` (SVAMP), ``question_id`` (Vicuna-80) or ``idx``; a file where no record has
  one (AlpacaEval's ``model_outputs.json``, TruthfulQA.csv, MSVAMP, MGSM) gets the record's
  position, counted from 1, as its id (``"1"``, ``"2"``...). A file where only some records have
  one is an error;
* instruction: ``instruction``, ``m_query`` (MSVAMP's translated question), ``question`` /
  ``Question``, ``query`` (LLMZoo), ``prompt``, ``text`` (Vicuna-80); SVAMP's ``Body`` and
  ``Question`` are joined;
* category: ``category`` / ``Category``, ``label`` (LLMZoo), ``Type`` / ``type`` (SVAMP);
* TruthfulQA.csv: ``Best Answer``, and ``Correct Answers`` / ``Incorrect Answers`` split on ``;``
  (stripped, empty parts dropped), which is how TruthfulQA's own code splits them;
* answers (SVAMP-like tasks, chosen for file names holding ``svamp``, ``mgsm`` or ``gsm8k``):
  ``answer``, ``Answer`` or ``response`` (MSVAMP).

Every record also carries ``eval_set`` (the name it was loaded by: a short name, or the file's
stem) and ``source_file`` (the file, or the hub dataset), beside ``lang`` and ``dataset`` (the
record's own ``dataset`` field when it has one, such as AlpacaEval's ``helpful_base``, otherwise
``eval_set``).

Standard library only; ``datasets`` is imported inside :func:`hub_records`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import languages
from .io import UserError, read_records

__all__ = ["EVAL_SETS", "SAMPLE_DIR", "load_eval_set", "hub_records", "normalise", "cli", "main"]

SAMPLE_DIR = Path(__file__).resolve().parent / "resources" / "sample"

#: short name -> (hub dataset, task)
EVAL_SETS: dict[str, tuple[str, str]] = {
    "x-alpacaeval": ("zhihz0535/X-AlpacaEval", "alpacaeval"),
    "x-truthfulqa": ("zhihz0535/X-TruthfulQA_en_zh_ko_it_es", "truthfulqa"),
    "x-svamp": ("zhihz0535/X-SVAMP_en_zh_ko_it_es", "svamp"),
}
_BY_HUB = {hub.lower(): short for short, (hub, _) in EVAL_SETS.items()}

# Alternative field names seen in the original benchmarks, first match wins.
_ID_FIELDS = ("id", "ID", "question_id", "idx")
_INSTRUCTION_FIELDS = ("instruction", "m_query", "question", "Question", "query", "prompt", "text")
_CATEGORY_FIELDS = ("category", "Category", "label", "Type", "type")
_ANSWER_FIELDS = ("answer", "Answer", "response")
#: Column names that mark a CSV/TSV first row as a header (compared without letter case).
_HEADER_NAMES = _ID_FIELDS + _INSTRUCTION_FIELDS + _CATEGORY_FIELDS + _ANSWER_FIELDS + (
    "Body", "dataset", "best_answer", "Best Answer", "correct_answers", "Correct Answers",
    "incorrect_answers", "Incorrect Answers", "output", "lang")
#: Columns of a CSV/TSV file without a header row (MGSM: question, then the numeric answer).
_HEADERLESS_COLUMNS = ("question", "answer")


def hub_records(name: str, *, split: str, config: str | None = None, data_files: str | None = None,
                hint: str = "") -> list[dict]:
    """Rows of a Hugging Face hub dataset (a real ``datasets.load_dataset`` call).

    Any failure becomes a one-line :class:`UserError` naming the dataset and ``hint`` (how to
    pass a local file instead)."""
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"loading {name!r} from the Hugging Face hub needs the 'datasets' package "
            f"(pip install 'plug-lite[train]'){'; ' + hint if hint else ''}"
        ) from None
    where = f"{name!r} (" + (f"config {config!r}, " if config else "") + (
        f"files {data_files!r}, " if data_files else "") + f"split {split!r})"
    kwargs: dict[str, Any] = {"split": split}
    if data_files:
        kwargs["data_files"] = data_files
    try:
        ds = datasets.load_dataset(name, config, **kwargs) if config else datasets.load_dataset(name, **kwargs)
    except Exception as e:  # offline, unknown split, private repo...: all one line for the user
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(f"could not load Hugging Face dataset {where}: {reason}{'; ' + hint if hint else ''}") from None
    return [dict(r) for r in ds]


def _hub_eval(hub: str, lang: str, task: str) -> list[dict]:
    """Try the known layouts in turn: a split named after the language (X-AlpacaEval), a config
    per language code, then the authors' per-language files (``zh/svamp_zh.json``)."""
    code = languages.get(lang).code
    split_name = languages.get(code).name.lower()
    hint = f"without the hub, pass a local JSON/JSONL file in the same schema instead of {hub!r}"
    try:
        return hub_records(hub, split=split_name, hint=hint)
    except UserError as first:
        # Offline or no datasets package: no point trying the other layouts.
        if "reach" in str(first).lower() or "offline" in str(first).lower() or "datasets' package" in str(first):
            raise
        for kw in ({"config": code, "split": "test"}, {"data_files": f"{code}/{task}_{code}.json", "split": "train"}):
            try:
                return hub_records(hub, hint=hint, **kw)
            except UserError:
                continue
        raise first from None


def _first(rec: dict, names: tuple[str, ...]) -> Any:
    for n in names:
        if n in rec and rec[n] is not None:
            return rec[n]
    return None


def _as_list(value: Any, where: str, field: str) -> list[str]:
    """TruthfulQA's answers: a list of strings, or one string joined by ";"."""
    if value is None:
        return []
    if isinstance(value, str):
        # TruthfulQA.csv joins answers with "; " (some rows end with a stray ";"); its own code
        # splits on ";" and strips each part, and so does this.
        return [v.strip() for v in value.split(";") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                                       for v in value):
        raise UserError(f"{where}: field {field!r} must be a list of strings or one string joined by ';'")
    return [str(v) for v in value]


def _first_key(rec: dict, names: tuple[str, ...]) -> str | None:
    for n in names:
        if n in rec and rec[n] is not None:
            return n
    return None


def normalise(rec: dict, *, lang: str, dataset: str, task: str, where: str, row: int | None = None,
              source_file: str | None = None) -> dict:
    """One record in the common shape; ``where`` names it in errors. ``row`` (the record's
    position from 1) is its id when the record has no id field."""
    id_key = _first_key(rec, _ID_FIELDS)
    rid = rec[id_key] if id_key else row
    if rid is None or str(rid).strip() == "":
        raise UserError(f"{where}: missing field 'id'")
    used = {id_key}
    if task == "svamp" and "Body" in rec and "Question" in rec and "instruction" not in rec:
        instruction = f"{str(rec['Body']).strip()} {str(rec['Question']).strip()}"
        used |= {"Body", "Question"}
    else:
        ins_key = _first_key(rec, _INSTRUCTION_FIELDS)
        instruction = rec[ins_key] if ins_key else None
        used.add(ins_key)
    if not isinstance(instruction, str) or not instruction.strip():
        raise UserError(f"{where}: missing field 'instruction'")
    cat_key = next((k for k in _CATEGORY_FIELDS if rec.get(k)), None)
    used.add(cat_key)
    out: dict[str, Any] = {
        "id": str(rid),
        "instruction": instruction.strip(),
        "lang": lang,
        "dataset": str(rec.get("dataset") or dataset),
        "category": str(rec[cat_key]) if cat_key else "",
    }
    skip = used | {"_where", "dataset", "category", "lang", "eval_set", "source_file"}
    out.update((k, v) for k, v in rec.items() if k not in skip)
    if task == "svamp":
        ans_key = _first_key(rec, _ANSWER_FIELDS)
        if ans_key is None or str(rec[ans_key]).strip() == "":
            raise UserError(f"{where}: missing field 'answer'")
        out.pop(ans_key, None)
        out["answer"] = rec[ans_key]
    elif task == "truthfulqa":
        for key, alts in (
            ("correct_answers", ("correct_answers", "Correct Answers")),
            ("incorrect_answers", ("incorrect_answers", "Incorrect Answers")),
        ):
            value = _first(rec, alts)
            if value is None:
                raise UserError(f"{where}: missing field {key!r}")
            out[key] = _as_list(value, where, key)
            out.pop(alts[1], None)
        best = _first(rec, ("best_answer", "Best Answer"))
        if best is not None:
            out["best_answer"] = str(best)
        out.pop("Best Answer", None)
    out["eval_set"] = dataset
    out["source_file"] = source_file
    return out


def _task_of(path: Path) -> str:
    name = path.name.lower()
    if "svamp" in name or "mgsm" in name or "gsm8k" in name:
        return "svamp"
    if "truthful" in name:
        return "truthfulqa"
    return "alpacaeval"


def load_eval_set(name_or_path: str | os.PathLike, lang: str, *, limit: int | None = None, task: str | None = None) -> list[dict]:
    """Instructions of an evaluation set in language ``lang`` (see the module docstring).

    ``task`` ("alpacaeval", "truthfulqa", "svamp") says which task fields a local file must
    carry; by default it is guessed from the file name (``*svamp*``, ``*mgsm*``, ``*gsm8k*``,
    ``*truthful*``)."""
    code = languages.get(lang).code
    key = str(name_or_path)
    if key == "sample":
        path = SAMPLE_DIR / f"eval.{code}.json"
        if not path.exists():
            have = sorted(p.name.split(".")[1] for p in SAMPLE_DIR.glob("eval.*.json"))
            raise UserError(f"no shipped sample evaluation set for {code!r}; available: {', '.join(have)}")
        raws = read_records(path)
        dataset, tsk = "plug_lite_sample", task or "alpacaeval"
        source = f"plug_lite/resources/sample/{path.name}"
    elif key.lower() in EVAL_SETS or key.lower() in _BY_HUB:
        short = key.lower() if key.lower() in EVAL_SETS else _BY_HUB[key.lower()]
        hub, tsk = EVAL_SETS[short]
        tsk = task or tsk
        raws = _hub_eval(hub, code, tsk)
        for i, r in enumerate(raws):
            r["_where"] = f"{hub} [{code}] record {i}"
        dataset, source = short, f"hf:{hub}"
    else:
        path = Path(key)
        if not path.exists():
            raise UserError(
                f"{path}: evaluation set not found (expected 'sample', one of {', '.join(EVAL_SETS)}, "
                "or a JSON/JSONL/CSV/TSV file)"
            )
        raws = read_records(path, header_names=_HEADER_NAMES, columns=_HEADERLESS_COLUMNS)
        dataset, tsk, source = path.stem, task or _task_of(path), str(path)
    if not raws:
        raise UserError(f"{key}: the evaluation set has no records")
    # Ids: the publisher's own, or the record's position when no record has one.
    with_id = [_first(r, _ID_FIELDS) is not None for r in raws]
    positional = not any(with_id)
    out = []
    seen: set[str] = set()
    for i, r in enumerate(raws):
        where = r.get("_where", key)
        rec = normalise(r, lang=code, dataset=dataset, task=tsk, where=where,
                        row=i + 1 if positional else None, source_file=source)
        if rec["id"] in seen:
            raise UserError(f"{where}: duplicate id {rec['id']!r}")
        seen.add(rec["id"])
        out.append(rec)
    if limit is not None:
        out = out[: max(0, int(limit))]
    return out


def main(*, name: str, lang: str, limit: int | None = None, out: str | None = None) -> list[dict]:
    """Load an evaluation set and write it (normalised) to ``out`` as JSONL, or print a summary."""
    from .io import write_jsonl

    recs = load_eval_set(name, lang, limit=limit)
    if out:
        write_jsonl(out, recs)
    cats: dict[str, int] = {}
    for r in recs:
        cats[r["category"] or "-"] = cats.get(r["category"] or "-", 0) + 1
    print(f"{len(recs)} instructions ({lang}) from {name}" + (f" -> {out}" if out else ""))
    print("categories: " + ", ".join(f"{k} {v}" for k, v in sorted(cats.items())))
    return recs


def cli(argv: list[str] | None = None) -> int:
    from .cli import Parser

    ap = Parser(prog="python -m plug_lite.evalsets", description="Load an evaluation set.")
    ap.add_argument("name", help="sample, x-alpacaeval, x-truthfulqa, x-svamp, a hub name, or a JSON/JSONL/CSV/TSV file")
    ap.add_argument("--lang", required=True)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from .io import run_cli

    return run_cli(lambda: main(name=args.name, lang=args.lang, limit=args.limit, out=args.out) and 0)


if __name__ == "__main__":
    raise SystemExit(cli())
