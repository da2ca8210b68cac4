"""Files and errors shared by every verb. Standard library only.

* :class:`UserError` — bad input. Its message is one line naming the file, the record and the
  field; the command line prints it and exits with code 2, no traceback.
* Atomic writes: everything final is written to a temporary name in the same folder and renamed.
* Append-only JSONL for resumable work (generate, judge cache): one record per line, flushed and
  fsynced per record; a half-written last line (a killed process) is ignored on read.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = [
    "UserError",
    "atomic_path",
    "umask",
    "keep_umask",
    "atomic_write_text",
    "write_json",
    "write_jsonl",
    "read_records",
    "read_json",
    "loads",
    "strip_where",
    "read_jsonl_resumable",
    "JsonlAppender",
    "check_disk_space",
    "run_cli",
    "redact",
]


class UserError(Exception):
    """Bad input or an unusable environment; ``str(e)`` is a one-line message for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split("\n")))


def umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def keep_umask(path: str | os.PathLike) -> None:
    """Give a file or folder made by :mod:`tempfile` (mode 0600 / 0700) the mode an ordinary
    ``open()`` / ``mkdir()`` would have given it under the user's umask (0644 / 0755 usually)."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file (or folder) is removed and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=(suffix or "") + ".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        keep_umask(tmp_path)
        os.replace(tmp_path, final)
    except BaseException as e:
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(final)  # a failed write names no file by itself
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_json(path: str | os.PathLike, *, missing: str = "file not found") -> Any:
    """The JSON document in ``path``; a one-line :class:`UserError` when it is missing
    (``missing`` says what that means), a folder, not UTF-8 or not JSON."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: {missing}")
    if p.is_dir():
        raise UserError(f"{p}: is a folder, expected a JSON file")
    try:
        return loads(p.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{p}:{e.lineno}: bad JSON ({e.msg}, column {e.colno})") from None


def _loc(path: Path, line: int | None, index: int | None) -> str:
    if line is not None:
        return f"{path}:{line}"
    if index is not None:
        return f"{path}: record {index}"
    return str(path)


def read_records(
    path: str | os.PathLike,
    *,
    required: Iterable[str] = (),
    nonempty: Iterable[str] = (),
    header_names: Iterable[str] | None = None,
    columns: Sequence[str] = (),
) -> list[dict]:
    """Records of a JSON (array, or an object with a ``data``/``rows``/``instances`` array),
    JSONL, CSV or TSV file. Each record gets ``_where`` ("file:line" or "file: record i") for
    error messages. Missing ``required`` fields and empty ``nonempty`` fields are one-line errors.

    JSON or JSON lines is decided by the content, whatever the extension: text that parses as one
    JSON value is JSON, text whose lines are JSON objects is JSONL. Lines are split on ``\\n``
    only (never on U+2028, U+2029, U+0085 and the other characters ``str.splitlines`` treats as
    line breaks: they are ordinary text inside a record). ``.csv`` and ``.tsv`` files are tables;
    their first row is the header, unless ``header_names`` is given and the first row names none
    of them: then the file has no header and its columns are named ``columns`` in order."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: file not found")
    if p.is_dir():
        raise UserError(f"{p}: is a folder, expected a JSON, JSONL, CSV or TSV file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        out = _read_table(p, text, "\t" if suffix == ".tsv" else ",", header_names, columns)
    else:
        out = _read_json_or_jsonl(p, text)
    required, nonempty = tuple(required), tuple(nonempty)
    for rec in out:
        for f in required:
            if f not in rec or rec[f] is None:
                raise UserError(f"{rec['_where']}: missing field {f!r}")
        for f in nonempty:
            v = rec.get(f)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise UserError(f"{rec['_where']}: field {f!r} is empty")
    return out


def _read_table(p: Path, text: str, delimiter: str, header_names: Iterable[str] | None,
                columns: Sequence[str]) -> list[dict]:
    # newline="" lets the csv module see quoted line breaks as part of their field.
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    # csv counts physical lines; keep each row's first line number for messages.
    lines, n = [], 1
    for row in rows:
        lines.append(n)
        n += 1 + sum(cell.count("\n") for cell in row)
    items = [(ln, row) for ln, row in zip(lines, rows) if any(c.strip() for c in row)]
    if not items:
        return []
    first = items[0][1]
    headerless = False
    if header_names is not None:
        known = {h.strip().casefold() for h in header_names}
        headerless = not any(c.strip().casefold() in known for c in first)
    if headerless:
        if not columns:
            raise UserError(f"{p}: the first row is not a header (it names no known column)")
        names, body = list(columns), items
    else:
        names, body = [c.strip() for c in first], items[1:]
        if len(set(names)) != len(names) or not all(names):
            raise UserError(f"{p}:{items[0][0]}: the header row has an empty or repeated column name")
    out = []
    for ln, row in body:
        if len(row) > len(names):
            what = "a file without a header row has the columns " if headerless else "the header names "
            raise UserError(f"{p}:{ln}: {len(row)} columns, expected at most {len(names)} "
                            f"({what}{', '.join(names)})")
        rec: dict[str, Any] = dict(zip(names, row))
        rec["_where"] = f"{p}:{ln}"
        out.append(rec)
    return out


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(text: str) -> Any:
    """``json.loads`` for files a user hands us: a value nested too deeply for the parser, or
    text holding a lone surrogate (an escaped ``"\\ud800"``, which is not Unicode and cannot be
    written back as UTF-8), is a :class:`json.JSONDecodeError` like any other bad JSON."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    if "\\u" in text and _has_lone_surrogate(value):
        at = text.lower().find("\\ud")
        raise json.JSONDecodeError("a lone surrogate escape (\\ud800-\\udfff) is not a character", text, max(at, 0))
    return value


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _LONE_SURROGATE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _read_json_or_jsonl(p: Path, text: str) -> list[dict]:
    body = text.strip()
    data: Any = None
    whole_error: json.JSONDecodeError | None = None
    if body.startswith(("[", "{")):
        try:
            data = loads(body)
        except json.JSONDecodeError as e:
            whole_error = e
    if data is None and (body.startswith("[") or not _first_line_is_object(body)):
        if whole_error is not None:
            e = whole_error
            raise UserError(f"{p}:{e.lineno}: bad JSON ({e.msg}, column {e.colno})") from None
        if body:
            return _jsonl(p, text)  # reports the first bad line
        return []
    if data is None:
        return _jsonl(p, text)
    if isinstance(data, dict):
        for key in ("data", "rows", "instances", "examples"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
        else:
            if "\n" not in body:  # one record on one line: JSON lines, named by its line
                return _jsonl(p, text)
            data = [data]
    if not isinstance(data, list):
        raise UserError(f"{p}: expected a JSON array of records")
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise UserError(f"{p}: record {i}: expected a JSON object, got {type(rec).__name__}")
        rec = dict(rec)
        rec["_where"] = f"{p}: record {i}"
        out.append(rec)
    return out


def _first_line_is_object(body: str) -> bool:
    try:
        return isinstance(loads(body.split("\n", 1)[0]), dict)
    except json.JSONDecodeError:
        return False


def _jsonl(p: Path, text: str) -> list[dict]:
    out = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{p}:{n}: bad JSON line ({e.msg}, column {e.colno})") from None
        if not isinstance(rec, dict):
            raise UserError(f"{p}:{n}: expected a JSON object, got {type(rec).__name__}")
        rec["_where"] = f"{p}:{n}"
        out.append(rec)
    return out


def strip_where(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k != "_where"}


def read_jsonl_resumable(path: str | os.PathLike) -> list[dict]:
    """Records of an append-only JSONL file. A last line cut off by a killed writer is dropped
    (and trimmed from the file, so the next append starts on a clean line); a bad line anywhere
    else is an error."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    lines = data.split(b"\n")
    out: list[dict] = []
    good_bytes = 0
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            good_bytes += len(raw) + 1
            continue
        try:
            rec = loads(raw.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError) as e:
            is_last = all(not x.strip() for x in lines[n:])
            if is_last and not data.endswith(b"\n"):
                with open(p, "r+b") as f:
                    f.truncate(good_bytes)
                break
            raise UserError(f"{p}:{n}: bad JSON line in a results file ({e})") from None
        out.append(rec)
        good_bytes += len(raw) + 1
    return out


class JsonlAppender:
    """Append records to a JSONL file, one flushed and fsynced line each (thread-safe)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import threading

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        read_jsonl_resumable(self.path)  # trims a torn last line
        self._f = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        self.write_many([record])

    def write_many(self, records: Iterable[dict]) -> None:
        """Append several records with one flush and fsync."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with self._lock:
            self._f.write(text)
            self._f.flush()
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # also through links and other spellings of one path
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def refuse_overwrite(outputs: dict[str, Any], inputs: dict[str, Any]) -> None:
    """A one-line :class:`UserError` when a file a command would write is one it reads.
    ``outputs`` / ``inputs``: what the user calls each file (a flag such as ``--out``, or a
    description) -> its path (None entries are skipped). Checked before anything is written."""
    ins = [(name, Path(p)) for name, p in inputs.items() if p is not None and str(p)]
    for oname, o in outputs.items():
        if o is None or not str(o):
            continue
        for iname, i in ins:
            if _same_file(Path(o), i):
                what = "" if oname == iname else f" {oname}"
                raise UserError(f"{o}: the output{what} is the input {iname}: writing it would overwrite "
                                "the input; choose another path")


def check_disk_space(folder: str | os.PathLike, need_bytes: int, what: str = "this file") -> None:
    """Raise a :class:`UserError` when ``folder`` has less than ``need_bytes`` free (+5%)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need_bytes * 1.05:
        raise UserError(
            f"{folder}: not enough disk space for {what}: need about {need_bytes / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free"
        )


_SECRET_ENV = ("OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PLUG_LITE_JUDGE_API_KEY")


#: The user-information part of a URL (``https://USER:PASSWORD@host``), which holds credentials.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#@\s]+@")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with any known secret (given, or from the usual environment variables) and the
    credentials of any URL in it (``http://user:pass@host`` -> ``http://***@host``) masked."""
    values = [s for s in secrets if s] + [os.environ.get(k, "") for k in _SECRET_ENV]
    for s in values:
        if s and len(s) >= 6:
            text = text.replace(s, "***")
    return _URL_USERINFO.sub(r"\1***@", text)


def run_cli(fn: Callable[[], Any]) -> int:
    """Run a command-line body: user errors become one line on stderr and exit code 2."""
    from .languages import LanguageError

    try:
        rc = fn()
    except (UserError, LanguageError) as e:
        print(f"error: {redact(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = e.filename2 or e.filename or "writing"  # a rename's target is the path the user named
        print(f"error: {redact(str(where))}: {e.strerror or e} (nothing half-written is kept)", file=sys.stderr)
        return 2
    return int(rc or 0)


#: What the machine refuses, not what plug_lite got wrong: a full disk or quota, a file over the
#: size limit, no permission, a read-only file system, a path of the wrong kind or too long. The
#: command line reports them in one line (exit 2); atomic writes leave no partial file behind.
_ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EACCES", "EPERM", "EROFS", "EISDIR",
                                      "ENOTDIR", "EEXIST", "ENAMETOOLONG") if hasattr(errno, name))
