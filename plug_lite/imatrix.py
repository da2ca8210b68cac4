"""Importance matrices from a run's own PLUG text, made with llama.cpp's ``llama-imatrix``.

An importance matrix records, for each weight matrix, how strongly each input column is activated
on calibration text; llama.cpp's quantizer then spends its rounding error where it matters least
for that text. llama-cpp-python cannot collect one, so this needs llama.cpp's programs
(:func:`plug_lite.toolchain.find_tool`; ``make tools``).

Calibration text:

* **the run's training rows** (:func:`run_conversations`): each whole conversation (system,
  user, and the PLUG answer with its pivot *and* target sections) rendered with the reference
  GGUF's own chat template, so the turn markers are the model's real special tokens
  (``llama-imatrix --parse-special``). The rows are those the run trained on
  (:func:`plug_lite.data.run_rows`), never the held-out rows the drift report scores;
* or a **text file** the user gives, used as it is (special tokens in it are parsed too).

:func:`make` runs ``llama-imatrix`` on it (context :data:`DEFAULT_CTX`; it uses whole chunks of
that many tokens, the rest of the text is left out) and writes ``<name>.gguf`` with a
``<name>.json`` record beside it: source, rows, characters, tokens, chunks, seconds, and the key
(reference file, text, settings) under which it is reused instead of made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from . import data, toolchain
from .engine import LlamaEngine, default_threads
from .io import UserError, atomic_path, write_json
from .runs import IMATRIX_FILE, ImatrixRecord, RunRecord

__all__ = ["DEFAULT_CTX", "run_conversations", "calibration_text", "file_identity", "make", "read_record",
           "check_file_choice", "for_run"]

#: Tokens per chunk llama-imatrix evaluates (PLUG rows are 150-300 tokens: a chunk holds one or two).
DEFAULT_CTX = 512
_MIN_CTX = 64


def run_conversations(rec: RunRecord) -> tuple[list[list[dict]], str]:
    """(conversations, where they come from): the whole conversations of the rows a run trained
    on; when its data file is unknown, the shipped sample for its format and language except its
    last :data:`plug_lite.data.HELD_OUT_ROWS` rows (those the drift report scores then)."""
    split = data.run_rows(rec)
    if split is not None and split.trained:
        rows, source = split.trained, f"{split.source} rows 0-{len(split.trained) - 1} (trained on)"
    else:
        rows, _ = data.sample_rows(rec.spec)
        rows = rows[:-data.HELD_OUT_ROWS]
        source = (f"the shipped sample ({rec.spec.format}, {rec.spec.target}) but its last {data.HELD_OUT_ROWS} rows; "
                  "the run's data file is not recorded or not found")
    return [list(r["prompt"]) + list(r["completion"]) for r in rows], source


def calibration_text(conversations: list[list[dict]], gguf: str | os.PathLike) -> tuple[str, int]:
    """(text, tokens): the conversations rendered with the GGUF's chat template one after the
    other, and how many tokens that is (special tokens parsed)."""
    eng = LlamaEngine(gguf, vocab_only=True, ctx=512)
    try:
        parts = []
        for conv in conversations:
            text, _ = eng.format(conv, generation_prompt=False)
            parts.append(text if text.endswith("\n") else text + "\n")
        text = "".join(parts)
        return text, len(eng.tokenize_text(text))
    finally:
        eng.close()


def file_identity(path: str | os.PathLike) -> str:
    """A cheap fingerprint of a large file: its size and three 1 MiB samples (start, middle, end)."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as f:
        for at in (0, max(0, size // 2 - (1 << 19)), max(0, size - (1 << 20))):
            f.seek(at)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


def read_record(out: str | os.PathLike) -> dict | None:
    """The record :func:`make` wrote beside the matrix ``out`` (None when either is missing)."""
    out = Path(out)
    try:
        record = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if out.is_file() else None


def make(
    gguf: str | os.PathLike,
    text: str,
    out: str | os.PathLike,
    *,
    source: str,
    tokens: int | None = None,
    rows: int | None = None,
    ctx: int = DEFAULT_CTX,
    threads: int | None = None,
) -> dict:
    """Run ``llama-imatrix`` on ``text`` with the reference ``gguf``; writes ``out`` (a GGUF
    imatrix) and its record ``out.json``, and returns the record. A matrix made before from the
    same reference, text and context is reused (the record returned then has ``reused``)."""
    gguf, out = Path(gguf), Path(out)
    if toolchain.find_tool("llama-imatrix") is None:
        raise UserError(f"an importance matrix needs llama.cpp's llama-imatrix; {toolchain.tools_status()['hint']}")
    if tokens is None:
        tokens = _count_tokens(gguf, text)
    # whole chunks only: shrink the chunk for a short text rather than make nothing
    while ctx > _MIN_CTX and tokens // ctx < 1:
        ctx //= 2
    if tokens // ctx < 1:
        raise UserError(f"{source}: {tokens} tokens are too few for an importance matrix (at least {_MIN_CTX})")
    key = hashlib.sha256(f"{file_identity(gguf)}\0{ctx}\0{text}".encode()).hexdigest()[:16]
    old = read_record(out)
    if old and old.get("key") == key:
        print(f"imatrix: reusing {out} ({old['source']}; {old['tokens_used']} tokens)", file=sys.stderr)
        return {**old, "reused": True}
    threads = threads or default_threads()[1]
    chunks = tokens // ctx
    print(f"imatrix: llama-imatrix on {tokens} tokens of {source} ({chunks} chunks of {ctx}, {threads} threads)",
          file=sys.stderr, flush=True)
    t0 = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", dir=out.parent, delete=False) as f:
        f.write(text)
        text_path = Path(f.name)
    try:
        with atomic_path(out, suffix=".gguf") as tmp:
            log = toolchain.run_tool("llama-imatrix", [
                "-m", str(gguf), "-f", str(text_path), "-o", str(tmp), "-c", str(ctx), "-b", str(ctx),
                "-t", str(threads), "--parse-special", "--no-ppl", "--output-format", "gguf", "-ngl", "0",
            ], what=f"importance matrix from {source}")
    finally:
        text_path.unlink(missing_ok=True)
    used = _chunks_used(log)
    record = {
        "file": str(out), "source": source, "rows": rows, "chars": len(text), "tokens": tokens,
        "ctx": ctx, "chunks": used if used is not None else chunks,
        "tokens_used": (used if used is not None else chunks) * ctx,
        "reference": gguf.name, "seconds": round(time.time() - t0, 1), "key": key,
        "made": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_json(out.with_suffix(".json"), record)
    print(f"imatrix: {out} in {record['seconds']:.0f} s", file=sys.stderr)
    return record


def _count_tokens(gguf: Path, text: str) -> int:
    eng = LlamaEngine(gguf, vocab_only=True, ctx=512)
    try:
        return len(eng.tokenize_text(text))
    finally:
        eng.close()


def _chunks_used(log: str) -> int | None:
    """Chunks llama-imatrix says it computed over."""
    import re

    m = re.search(r"computing over (\d+) chunks", log)
    return int(m.group(1)) if m else None


def _record(made: dict, where: str) -> ImatrixRecord:
    """The typed record of what :func:`make` returned."""
    reused = bool(made.get("reused"))
    return ImatrixRecord(note=f"{'reused' if reused else 'made'} {where}: {made['tokens_used']} tokens",
                         file=Path(made["file"]), source=made.get("source"), tokens=made.get("tokens_used"),
                         chunks=made.get("chunks"), ctx=made.get("ctx"), seconds=made.get("seconds"), reused=reused)


def check_file_choice(choice: str | os.PathLike) -> Path:
    """``--imatrix FILE`` as a Path, checked before any slow step: the file is there, and so are
    the programs it needs (llama-quantize for a ready ``.gguf``/``.dat`` matrix, and llama-imatrix
    too for a text file to calibrate on)."""
    path = Path(choice)
    if not path.is_file():
        raise UserError(f"{path}: --imatrix file not found (expected auto, none, a text file or a .gguf/.dat matrix)")
    missing = [t for t in ("llama-imatrix", "llama-quantize") if toolchain.find_tool(t) is None]
    if path.suffix.lower() in (".gguf", ".dat"):
        if "llama-quantize" in missing:
            raise UserError(f"{path}: quantizing with an importance matrix needs llama.cpp's llama-quantize; "
                            f"{toolchain.tools_status()['hint']}")
    elif missing:
        raise UserError(f"{path}: making an importance matrix needs llama.cpp's {' and '.join(missing)}; "
                        f"{toolchain.tools_status()['hint']}")
    return path


def for_run(rec: RunRecord, ref: str | os.PathLike, choice: str = "auto", *, out: str | os.PathLike | None = None,
            threads: int | None = None) -> ImatrixRecord:
    """The importance matrix for quantizing a run's reference GGUF ``ref``, as ``--imatrix``
    asks: ``auto`` (made from the run's training rows when llama.cpp's programs are there, kept
    as ``RUN_DIR/imatrix.gguf`` and reused), ``none``, a ready matrix (``.gguf``/``.dat``, as
    llama-imatrix writes) or a text file to calibrate on. The record says what was done, or why
    no matrix is used (:attr:`ImatrixRecord.used` is False then)."""
    choice = str(choice)
    missing = [t for t in ("llama-imatrix", "llama-quantize") if toolchain.find_tool(t) is None]
    hint = toolchain.tools_status()["hint"]
    out = Path(out) if out else Path(rec.folder or ".") / IMATRIX_FILE
    if choice.lower() == "none":
        return ImatrixRecord(note="not used (--imatrix none)")
    if choice.lower() == "auto":
        if missing:
            return ImatrixRecord(note=f"not made ({', '.join(missing)} missing; llama-cpp-python cannot collect one): {hint}")
        convs, source = run_conversations(rec)
        text, tokens = calibration_text(convs, ref)
        made = make(ref, text, out, source=source, tokens=tokens, rows=len(convs), threads=threads)
        return _record(made, f"from {made['source']}")
    path = check_file_choice(choice)
    if path.suffix.lower() in (".gguf", ".dat"):
        return ImatrixRecord(note=f"given: {path}", file=path, source=f"given ({path})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    made = make(ref, text, out, source=str(path), threads=threads)
    return _record(made, f"from {path}")
