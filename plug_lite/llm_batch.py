"""The big LLM jobs on batch engines: one request file for the OpenAI Batch API, vLLM's
``run-batch`` and the local runner.

Every call a job needs (``translate``, ``judge``, ``generate`` through an endpoint) is a
:class:`Call`: its call-cache key, the request body the live client sends
(:func:`plug_lite.llm.chat_body`) and the job's own bookkeeping. The same calls can go four ways,
picked by :class:`BatchOptions`:

* live (no option): the job's own concurrent loop, as before;
* ``write_requests``: :func:`write_requests` writes them as OpenAI batch input lines and stops;
* ``read_results``: :func:`ingest_files` puts a result file's answers into the call cache and the
  job finishes as if the calls had been made now;
* ``batch``: :class:`BatchRunner` submits them to the endpoint's Batch API and collects them.

The contract
------------
One request line (OpenAI batch input; the same lines are vLLM ``run-batch`` input)::

    {"custom_id": KEY, "method": "POST", "url": "/v1/chat/completions", "body": BODY}

``custom_id`` is the existing call-cache key (64 hex characters), so a result line lands in the
cache exactly where a live call would have put it; ``body`` is exactly what the live client
sends (model, messages, temperature, max_tokens, and seed for ``generate``: fields every
OpenAI-compatible server reads). plug_lite's own bookkeeping (job, item id, pairwise order,
language) is NOT in the line: it goes into a sidecar manifest ``FILE.manifest.jsonl`` keyed by
``custom_id``. Only uncached calls are written. Files are split into shards within the
published limits, one model per shard: at most 50,000 requests and 200 MB per input file
(the ``input_file_id`` documentation of ``batches.create`` in openai-python 3.63;
https://platform.openai.com/docs/guides/batch), 200 MB counted as 200,000,000 bytes.

A result line (OpenAI output and error files; vLLM's ``BatchRequestOutput``, the same shape in
one file)::

    {"id": ..., "custom_id": KEY, "response": {"status_code": 200, "request_id": ...,
     "body": <chat.completion>}, "error": null}

A line is a success only when ``error`` is null, ``response.status_code`` is 200 and
``response.body`` is a chat completion with text (``choices[0].message.content`` a string: the
live client's own guard, :func:`plug_lite.llm.completion_parts`); everything else is a failure,
never cached, so the next ``--write-requests`` holds exactly the calls still missing. Failures
seen in the wild: an error-file line with ``response.status_code`` 400 and the reason in
``response.body.error`` (openai/openai-openapi issue 302), a line with ``response: null`` and
``error: {"code": "batch_expired" | "batch_cancelled", ...}`` for requests an expired or cancelled
batch never ran (LiteLLM's documentation of the same behaviour, BerriAI/litellm-docs PR 1571),
and vLLM's ``make_error_request_output`` (``vllm/entrypoints/openai/run_batch.py``): status 400,
no body, the message in ``error`` as a string. Lines may come in any order; a duplicate line is
counted and ignored (the first success wins); a line whose ``custom_id`` the job does not need is
counted and ignored (it cannot be from this job's request file).

The Batch API runner
--------------------
Per shard: ``files.create(purpose="batch")``, a ledger line (shard hash, attempt, file id, the
shard's keys), ``batches.create(endpoint="/v1/chat/completions", completion_window="24h",
metadata={"plug_lite_shard": HASH, "plug_lite_attempt": N, ...})``, a ledger line with the batch
id, fsynced before any polling. The ledger (an append-only JSONL beside the call cache) is what
makes reruns safe:

* a shard whose batch is still running is polled, never submitted again; the calls of every
  open batch are left out of new shards; one run at a time holds the ledger (``LEDGER.lock``, an
  advisory flock the system drops when the process ends), so two runs at once cannot both submit;
* before creating any batch the runner lists the account's batches (newest first, back
  :data:`LOOKBACK_DAYS` days) and adopts one that carries the shard's tag, so a kill -9 between
  ``batches.create`` and the ledger write creates no second batch; a create whose answer is lost
  (timeout, dropped connection, 5xx) is not retried by the client (it sends no idempotency
  key): the runner lists again and adopts the tagged batch before it sends another create;
* a finished batch's output and error files are ingested into the call cache; an expired or
  cancelled batch is ingested partially and its rest resubmitted as a new shard; a completed
  batch's failed or missing lines (also those of a result file the provider no longer has) are
  this run's failures (a rerun submits them again, as attempt N+1 of the same shard when the
  content is identical);
* with ``wait`` the runner polls every ``poll`` seconds, with progress, until every batch has
  ended; without it, it polls once and returns: a later run of the same command collects.

The Batch API's schema (statuses ``validating``, ``failed``, ``in_progress``, ``finalizing``,
``completed``, ``expired``, ``cancelling``, ``cancelled``; ``request_counts``; ``metadata`` of up to
16 keys of at most 64 characters with values of at most 512) is that of openai-python's
``types/batch.py``. Anthropic's Message Batches API takes another request format
(``{"custom_id", "params"}``) at another route and is not supported.

Standard library only at import time; ``openai`` and ``tqdm`` are imported when needed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from . import llm
from .io import JsonlAppender, UserError, atomic_write_text, input_file, loads, read_jsonl_resumable, redact

__all__ = [
    "URL",
    "MAX_LINES",
    "MAX_BYTES",
    "BATCH_DISCOUNT",
    "Call",
    "BatchOptions",
    "Shard",
    "shard_calls",
    "request_line",
    "write_requests",
    "Result",
    "parse_result",
    "read_result_file",
    "Ingested",
    "ingest",
    "ingest_files",
    "BatchRunner",
    "Dispatched",
    "dispatch",
    "ledger_path",
    "price",
]

URL = "/v1/chat/completions"
#: The OpenAI Batch API's limits per input file (openai-python 3.63, ``batches.create``).
MAX_LINES = 50_000
MAX_BYTES = 200_000_000
#: Batch price / list price at OpenAI, Azure OpenAI and Groq (50% off).
BATCH_DISCOUNT = 0.5
#: How far back the runner looks for a batch it may have created without recording it.
LOOKBACK_DAYS = 31
#: Metadata keys of the batches the runner creates.
TAG_SHARD, TAG_ATTEMPT, TAG_JOB = "plug_lite_shard", "plug_lite_attempt", "plug_lite_job"
TERMINAL = ("completed", "failed", "expired", "cancelled")
#: Error codes of requests a batch never ran: resubmitted, not counted as failures.
NOT_RUN = ("batch_expired", "batch_cancelled")
#: A run resubmits the rest of expired / cancelled batches at most this many times.
MAX_ROUNDS = 10


@dataclass(frozen=True)
class Call:
    """One LLM call of a job: its cache key (the request's ``custom_id``), the request body
    and the job's bookkeeping (written to the manifest, never sent)."""

    key: str
    body: dict
    meta: dict = field(default_factory=dict)


@dataclass
class BatchOptions:
    """How a job's LLM calls are made. None of them set: live calls, as before."""

    write_requests: str | None = field(default=None, metadata={
        "help": "write the uncached calls as OpenAI batch request file(s) FILE (+ FILE.manifest.jsonl) and stop; "
                "run them elsewhere (vllm run-batch, a provider console), then --read-results"})
    read_results: list[str] | None = field(default=None, metadata={
        "help": "ingest a batch result file (OpenAI output or error file, vLLM run-batch output) into the call "
                "cache and finish the job; repeat for several files; calls without a good line fail"})
    batch: bool = field(default=False, metadata={
        "help": "submit the uncached calls to the endpoint's Batch API (half price at OpenAI); a rerun "
                "collects what finished and never submits a shard twice"})
    batch_wait: bool = field(default=False, metadata={
        "help": "with --batch: poll until every batch has ended, then finish the job (default: submit, "
                "check once and return; rerun to collect)"})
    batch_poll: float = field(default=30.0, metadata={"help": "with --batch-wait: seconds between polls"})
    batch_url: str = field(default=URL, metadata={
        "help": "the url of every request line and the batch's endpoint (Azure OpenAI wants /chat/completions)"})

    @property
    def mode(self) -> str:
        """``"write"``, ``"read"``, ``"batch"`` or ``"live"``."""
        if self.write_requests:
            return "write"
        if self.read_results:
            return "read"
        if self.batch:
            return "batch"
        return "live"

    def outputs(self) -> dict[str, str]:
        """The files these options write, by flag (for :func:`plug_lite.io.refuse_overwrite`)."""
        if not self.write_requests:
            return {}
        return {"--write-requests": self.write_requests,
                "--write-requests (its manifest)": str(manifest_path(self.write_requests))}

    def inputs(self) -> dict[str, str]:
        """The files these options read, by flag."""
        return {"--read-results" + (f" #{i + 1}" if i else ""): p for i, p in enumerate(self.read_results or [])}

    def check(self) -> "BatchOptions":
        """One-line errors for options that cannot go together."""
        given = [name for name, on in (("--write-requests", self.write_requests), ("--read-results", self.read_results),
                                       ("--batch", self.batch)) if on]
        if len(given) > 1:
            raise UserError(f"{' and '.join(given)} cannot go together: write the requests, run them, then read "
                            "the results in a later run (or let --batch do all three)")
        if self.batch_wait and not self.batch:
            raise UserError("--batch-wait needs --batch")
        if self.batch_poll <= 0:
            raise UserError(f"--batch-poll must be positive (got {self.batch_poll:g})")
        if not self.batch_url.startswith("/"):
            raise UserError(f"--batch-url must be a path such as {URL} (got {self.batch_url!r})")
        return self


# --- request files -------------------------------------------------------------------------------


def request_line(call: Call, url: str = URL) -> bytes:
    """The OpenAI batch input line of ``call`` (UTF-8, newline-terminated)."""
    line = {"custom_id": call.key, "method": "POST", "url": url, "body": call.body}
    return (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass
class Shard:
    """One request file: calls of one model within the per-file limits."""

    model: str
    calls: list[Call]
    data: bytes

    @functools.cached_property
    def hash(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.calls]


def shard_calls(calls: Iterable[Call], *, url: str = URL, max_lines: int = MAX_LINES,
                max_bytes: int = MAX_BYTES) -> list[Shard]:
    """The calls as request files: one model per file (in the order models first appear), each
    file at most ``max_lines`` lines and ``max_bytes`` bytes, calls in their given order. A key
    given twice is written once. The same calls always give the same bytes (and shard hash)."""
    by_model: dict[str, list[tuple[Call, bytes]]] = {}
    seen: set[str] = set()
    for c in calls:
        if c.key in seen:
            continue
        seen.add(c.key)
        line = request_line(c, url)
        if len(line) > max_bytes:
            raise UserError(f"call {c.key[:12]} ({c.meta or 'no bookkeeping'}): its request line is {len(line):,} "
                            f"bytes, over the {max_bytes:,}-byte limit of one batch input file")
        by_model.setdefault(str(c.body.get("model")), []).append((c, line))
    shards = []
    for model, items in by_model.items():
        cur: list[tuple[Call, bytes]] = []
        size = 0
        for c, line in items:
            if cur and (len(cur) >= max_lines or size + len(line) > max_bytes):
                shards.append(Shard(model, [x for x, _ in cur], b"".join(b for _, b in cur)))
                cur, size = [], 0
            cur.append((c, line))
            size += len(line)
        if cur:
            shards.append(Shard(model, [x for x, _ in cur], b"".join(b for _, b in cur)))
    return shards


def _shard_paths(path: Path, n: int) -> list[Path]:
    if n == 1:
        return [path]
    suffix = path.suffix or ".jsonl"
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return [path.with_name(f"{stem}.{i:03d}{suffix}") for i in range(1, n + 1)]


def manifest_path(path: str | Path) -> Path:
    p = Path(path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.manifest.jsonl")


def write_requests(calls: list[Call], path: str | Path, *, url: str = URL, max_lines: int = MAX_LINES,
                   max_bytes: int = MAX_BYTES) -> dict:
    """Write ``calls`` as request file(s) at ``path`` (``NAME.001.jsonl``, ``NAME.002.jsonl``...
    when more than one shard is needed) and the manifest ``NAME.manifest.jsonl`` (one line per
    call: ``custom_id``, file, model, shard hash and the call's bookkeeping). Nothing is written
    when there are no calls. Returns ``{"requests", "files", "manifest", "shards"}``."""
    path = Path(path)
    shards = shard_calls(calls, url=url, max_lines=max_lines, max_bytes=max_bytes)
    if not shards:
        return {"requests": 0, "files": [], "manifest": None, "shards": []}
    paths = _shard_paths(path, len(shards))
    manifest = []
    for p, s in zip(paths, shards):
        with open(_tmp(p), "wb") as f:  # bytes exactly as hashed
            f.write(s.data)
        manifest += [{"custom_id": c.key, "file": p.name, "model": s.model, "shard": s.hash, **c.meta} for c in s.calls]
    for p in paths:
        _tmp(p).replace(p)
    mp = manifest_path(path)
    atomic_write_text(mp, "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in manifest))
    return {"requests": sum(len(s.calls) for s in shards), "files": [str(p) for p in paths], "manifest": str(mp),
            "shards": [{"file": str(p), "model": s.model, "requests": len(s.calls), "bytes": len(s.data),
                        "hash": s.hash} for p, s in zip(paths, shards)]}


def _tmp(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    return p.with_name(f".{p.name}.tmp")


# --- result files --------------------------------------------------------------------------------


@dataclass
class Result:
    """One result line: ``text`` when it is a success, else ``error`` (and ``not_run`` when the
    batch never ran the request: expired or cancelled before it)."""

    custom_id: str
    text: str | None = None
    usage: dict = field(default_factory=dict)
    finish_reason: str | None = None
    error: str | None = None
    not_run: bool = False


def parse_result(obj: Any, where: str) -> Result:
    """A result line (OpenAI output / error file, vLLM ``run-batch`` output) as a :class:`Result`.
    A line that is not a result line at all is a :class:`UserError` naming ``where``."""
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected a JSON object (a batch result line)")
    cid = obj.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise UserError(f"{where}: missing field 'custom_id'")
    if "response" not in obj and "error" not in obj:
        if "body" in obj and "method" in obj:
            raise UserError(f"{where}: a request line, not a result line (pass the batch's output file)")
        raise UserError(f"{where}: missing field 'response'")
    err, resp = obj.get("error"), obj.get("response")
    if err not in (None, "", {}):
        return Result(cid, error=_error_text(err), not_run=isinstance(err, dict) and err.get("code") in NOT_RUN)
    if not isinstance(resp, dict):
        return Result(cid, error="no response in the result line")
    status, body = resp.get("status_code"), resp.get("body")
    if status != 200:
        why = f": {_error_text(body['error'])}" if isinstance(body, dict) and body.get("error") else ""
        return Result(cid, error=f"HTTP {_one_line(status)[:20]}{why}")
    try:
        text, finish_reason, usage = llm.completion_parts(body)
    except llm.CallError as e:
        return Result(cid, error=f"status 200 but {e}")
    return Result(cid, text=text, finish_reason=finish_reason if isinstance(finish_reason, str) else "stop",
                  usage={"prompt": _count(usage["prompt"]), "completion": _count(usage["completion"])}
                  if usage["known"] else {})


def _error_text(err: Any) -> str:
    """One line from an ``error`` value: OpenAI's ``{"code", "message"}`` or vLLM's string."""
    if isinstance(err, dict):
        code, msg = err.get("code"), err.get("message")
        text = f"{code}: " if isinstance(code, str) and code else ""
        return _one_line(text + (msg if isinstance(msg, str) and msg else json.dumps(err, ensure_ascii=False)))
    return _one_line(err if isinstance(err, str) else json.dumps(err, ensure_ascii=False))


def _count(v: Any) -> int:
    """A token count as reported, or 0 when it is not a number."""
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e15 else 0


def _one_line(text: Any, secrets: Iterable[str | None] = ()) -> str:
    """``text`` on one line, at most 300 characters, with ``secrets`` (and the usual environment
    variables' keys) masked."""
    return redact(" ".join(str(text).split()), secrets)[:300]


def read_result_file(path: str | Path) -> Iterable[tuple[str, Any]]:
    """(``file:line``, parsed JSON) of every non-blank line of a result file. A line that is not
    JSON is a :class:`UserError` naming the file and line."""
    p = input_file(path, "a batch result file (JSONL)")
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                yield f"{p}:{n}", loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise UserError(f"{p}:{n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            except ValueError as e:
                raise UserError(f"{p}:{n}: not a JSON line ({e})") from None


def _text_lines(text: str, source: str) -> Iterable[tuple[str, Any]]:
    for n, raw in enumerate(text.split("\n"), 1):
        if raw.strip():
            try:
                yield f"{source}:{n}", loads(raw)
            except ValueError as e:
                raise UserError(f"{source}:{n}: not a JSON line ({e})") from None


@dataclass
class Ingested:
    """What one ingestion did: keys cached now, failures (key -> reason), keys a batch never
    ran, and the lines ignored (duplicates, keys the job does not need, keys already cached)."""

    ok: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    not_run: set[str] = field(default_factory=set)
    duplicates: int = 0
    unknown: int = 0
    already_cached: int = 0
    usage: Counter = field(default_factory=Counter)

    def seen(self) -> set[str]:
        return self.ok | set(self.failed) | self.not_run

    def add(self, other: "Ingested") -> None:
        """Fold in another file's ingestion: a success anywhere beats a failure."""
        self.ok |= other.ok
        for k, why in other.failed.items():
            self.failed.setdefault(k, why)
        self.not_run |= other.not_run
        for k in self.ok:
            self.failed.pop(k, None)
        self.not_run -= self.ok | set(self.failed)
        self.duplicates += other.duplicates
        self.unknown += other.unknown
        self.already_cached += other.already_cached
        self.usage.update(other.usage)


def ingest(lines: Iterable[tuple[str, Any]], cache: llm.CallCache, wanted: Mapping[str, Call], *,
           source: str, block: int = 1000) -> Ingested:
    """Put the successful result lines of ``lines`` into ``cache`` (a record like a live call's:
    ``text``, ``usage``, ``model``, plus ``finish_reason``, ``via: "batch"`` and ``source``), fsynced
    ``block`` lines at a time and whatever happens (a bad line further on keeps what came before).
    Only keys in ``wanted`` are taken; the first success of a key wins; failures are returned,
    never cached."""
    rep = Ingested()
    seen: set[str] = set()
    todo: list[tuple[str, dict]] = []
    try:
        for where, obj in lines:
            r = parse_result(obj, where)
            call = wanted.get(r.custom_id)
            if call is None:
                rep.unknown += 1
                continue
            if r.custom_id in seen:
                rep.duplicates += 1
            seen.add(r.custom_id)
            if r.custom_id in rep.ok:
                continue
            if r.custom_id in cache:
                rep.already_cached += 1
                continue
            if r.text is None:
                if r.not_run:
                    rep.not_run.add(r.custom_id)
                else:
                    rep.failed.setdefault(r.custom_id, r.error or "failed")
                continue
            todo.append((r.custom_id, {"text": r.text, "usage": r.usage, "model": call.body.get("model"),
                                       "finish_reason": r.finish_reason, "via": "batch", "source": source}))
            rep.ok.add(r.custom_id)
            rep.failed.pop(r.custom_id, None)
            rep.not_run.discard(r.custom_id)
            rep.usage.update(r.usage)
            if len(todo) >= block:
                cache.put_many(todo)
                todo = []
    finally:
        cache.put_many(todo)
    rep.not_run -= set(rep.failed)
    return rep


def ingest_files(paths: Iterable[str], cache: llm.CallCache, wanted: Mapping[str, Call]) -> Ingested:
    """:func:`ingest` over result files (an output and an error file, or vLLM's one file)."""
    total = Ingested()
    for p in paths:
        total.add(ingest(read_result_file(p), cache, wanted, source=str(p)))
    return total


# --- the Batch API runner ------------------------------------------------------------------------


def ledger_path(cache_path: str | Path) -> Path:
    """The batch ledger beside a call cache: ``CACHE.batches.jsonl``."""
    p = Path(cache_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.batches.jsonl")


@dataclass
class _Entry:
    """The ledger's state of one (shard hash, attempt)."""

    shard: str
    attempt: int
    keys: list[str] = field(default_factory=list)
    model: str = ""
    file_id: str | None = None
    batch_id: str | None = None
    ended: str | None = None  # the status it ended with, once ingested


class _Ledger:
    """Append-only, fsynced JSONL of what was submitted: ``uploaded`` (shard, attempt, file id,
    keys), ``created`` (batch id), ``ended`` (status and counts, after ingestion)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._read()
        self._out: JsonlAppender | None = None
        self._lock = None

    def _read(self) -> None:
        self.entries: dict[tuple[str, int], _Entry] = {}
        for rec in read_jsonl_resumable(self.path):
            self._apply(rec)

    def lock(self) -> None:
        """Hold ``LEDGER.lock`` until :meth:`close`: a second run of the same job (another terminal,
        a notebook cell run twice) would submit the same shards again and pay for them twice. An
        advisory ``flock``: the system releases it when the process ends, even by kill -9."""
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): no lock
            return
        path = self.path.with_name(self.path.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(path, "a")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise UserError(f"{self.path}: another run is submitting or collecting these batches (its lock "
                            f"{path.name} is held); wait for it to end or stop it, then rerun") from None
        self._lock = f
        self._read()  # again: a run that held the lock may have written since

    def _apply(self, rec: dict) -> None:
        k = (rec.get("shard"), int(rec.get("attempt", 0)))
        e = self.entries.get(k)
        if e is None:
            e = self.entries[k] = _Entry(k[0], k[1])
        ev = rec.get("event")
        if ev == "uploaded":
            e.keys, e.model, e.file_id = list(rec.get("keys") or []), rec.get("model", ""), rec.get("file_id")
        elif ev == "created":
            e.batch_id, e.file_id = rec.get("batch_id"), rec.get("file_id") or e.file_id
        elif ev == "ended":
            e.ended = rec.get("status") or "ended"

    def write(self, rec: dict) -> None:
        if self._out is None:
            self._out = JsonlAppender(self.path)
        rec = {"time": round(time.time(), 3), **rec}
        self._out.write(rec)  # flushed and fsynced before the caller goes on
        self._apply(rec)

    def next_attempt(self, shard: str) -> int:
        """The attempt a new submission of ``shard`` gets: the number of ended ones."""
        return sum(1 for (h, _), e in self.entries.items() if h == shard and e.ended)

    def open(self) -> list[_Entry]:
        """Batches created and not yet ingested."""
        return [e for e in self.entries.values() if not e.ended and e.batch_id]

    def unconfirmed(self) -> list[_Entry]:
        """Files uploaded whose batch the ledger does not know: a run was stopped between
        ``files.create`` and the ledger line after ``batches.create``."""
        return [e for e in self.entries.values() if not e.ended and not e.batch_id and e.file_id]

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._lock is not None:
            self._lock.close()  # (closing the file releases the flock)
            self._lock = None


@dataclass
class Dispatched:
    """How a job's calls went through a batch runner: ``mode`` (``write``, ``read``, ``batch``),
    ``by_batch`` calls answered from a batch or result file this run, ``failed`` (key -> reason;
    never cached), ``pending`` batch ids still running (collect them with a rerun), ``written``
    (the request files of ``write``) and ``counts`` (what ingestion and submission did)."""

    mode: str
    by_batch: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    written: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    usage: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the job can finish now (``write`` stops; ``batch`` with batches still running
        returns to be collected later)."""
        return self.mode == "read" or (self.mode == "batch" and not self.pending)

    def message(self) -> str:
        """What to do next, for a job that stops here (``write``, or batches still running)."""
        if self.mode == "write":
            w = self.written
            if not w.get("requests"):
                return "no requests written: every call is cached; run without --write-requests to finish"
            files = ", ".join(w["files"])
            return (f"{w['requests']} requests written to {files} (bookkeeping in {w['manifest']}); nothing was "
                    "sent. Run them (vllm run-batch -i FILE -o OUT --model NAME, or a provider's Batch API), "
                    "then rerun this command with --read-results OUT")
        ids = ", ".join(self.pending)
        return (f"{len(self.pending)} batch{'es' if len(self.pending) > 1 else ''} still running ({ids}); rerun "
                "the same command to collect (nothing is submitted twice), or add --batch-wait")

    def public(self) -> dict:
        """What a results file records of the batch runner."""
        out = {"mode": self.mode, "by_batch": self.by_batch, "failed": len(self.failed)}
        if self.pending:
            out["pending"] = list(self.pending)
        if self.written:
            out["written"] = {k: v for k, v in self.written.items() if k != "shards"}
        if self.counts:
            out["counts"] = dict(self.counts)
        return out


def price(base: tuple[float, float] | None, opts: BatchOptions) -> tuple[float, float] | None:
    """USD per 1M (input, output) tokens for a dry run: the Batch API's discount applied with
    ``--batch`` (calls written for another engine cost what that engine costs: list price)."""
    if base is None or not opts.batch:
        return base
    return base[0] * BATCH_DISCOUNT, base[1] * BATCH_DISCOUNT


class BatchRunner:
    """Submits calls to an OpenAI-compatible Batch API and collects them (see the module
    docstring). ``cfg`` gives the endpoint, key, timeout and retries (the model comes from each
    call's body); ``say`` prints progress lines (default: stderr)."""

    def __init__(self, cfg: llm.LLMSettings, cache: llm.CallCache, ledger: str | Path, *, job: str = "",
                 wait: bool = False, poll: float = 30.0, url: str = URL, max_lines: int = MAX_LINES,
                 max_bytes: int = MAX_BYTES, say: Callable[[str], None] | None = None) -> None:
        import openai

        self.cfg, self.cache, self.job = cfg, cache, job
        self.wait, self.poll, self.url = wait, poll, url
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.ledger = _Ledger(Path(ledger))
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self._oa = openai
        self.client = openai.OpenAI(api_key=cfg.api_key, base_url=cfg.base_url, timeout=cfg.timeout,
                                    max_retries=cfg.max_retries)
        self._remote: dict[tuple[str, str], Any] | None = None
        self.counts: Counter = Counter()

    # -- the API, with one-line errors --

    def _api(self, what: str, fn: Callable[[], Any]) -> Any:
        oa = self._oa
        where = self.cfg.base_url or "api.openai.com"
        try:
            return fn()
        except (oa.AuthenticationError, oa.PermissionDeniedError) as e:
            raise llm.FatalLLMError(f"{where} refused the API key (HTTP {e.status_code}) for {what}: check "
                                    "OPENAI_API_KEY / --api-key") from None
        except oa.NotFoundError as e:
            raise UserError(f"HTTP 404 from {where} for {what}: this endpoint may have no Batch API (vLLM's "
                            "server and llama-server have none: use --write-requests and vllm run-batch) "
                            f"({_one_line(str(e), [self.cfg.api_key])[:160]})") from None
        except oa.APIStatusError as e:
            raise UserError(f"HTTP {e.status_code} from {where} for {what} ({llm.retries_done(e)}): "
                            f"{_one_line(str(e), [self.cfg.api_key])[:200]}") from None
        except oa.APIConnectionError as e:
            raise UserError(f"cannot reach {where} for {what} ({llm.retries_done(e)}); the batches already "
                            "submitted are in the ledger: rerun to collect them") from None

    def _find_remote(self) -> dict[tuple[str, str], Any]:
        """The account's batches that carry a plug_lite shard tag, by (shard, attempt); listed
        once per run, newest first, back :data:`LOOKBACK_DAYS` days."""
        if self._remote is None:
            found: dict[tuple[str, str], Any] = {}
            cutoff = time.time() - LOOKBACK_DAYS * 86400
            for b in self._api("listing batches", lambda: self.client.batches.list(limit=100)):
                if (b.created_at or 0) < cutoff:
                    break
                md = b.metadata or {}
                tag = (md.get(TAG_SHARD), md.get(TAG_ATTEMPT))
                if tag[0] and tag not in found:
                    found[tag] = b
            self._remote = found
            self.counts["listed"] += 1
        return self._remote

    # -- one shard --

    def _submit(self, shard: Shard) -> _Entry:
        """The ledger entry of ``shard``'s batch: an open one resumed, one found by its tag
        adopted, or a new one uploaded and created."""
        h = shard.hash
        attempt = self.ledger.next_attempt(h)
        e = self.ledger.entries.get((h, attempt))
        if e is not None and e.batch_id:
            return e
        remote = self._find_remote().get((h, str(attempt)))
        if remote is not None:  # created by a run killed before it wrote the ledger
            if e is None or not e.keys:
                self.ledger.write({"event": "uploaded", "shard": h, "attempt": attempt, "file_id": remote.input_file_id,
                                   "model": shard.model, "n": len(shard.calls), "keys": shard.keys})
            self.ledger.write({"event": "created", "shard": h, "attempt": attempt, "batch_id": remote.id,
                               "file_id": remote.input_file_id, "adopted": True})
            self.counts["adopted"] += 1
            self.say(f"batch {remote.id}: found by its tag (shard {h[:12]}, attempt {attempt}); not submitted again")
            return self.ledger.entries[(h, attempt)]
        file_id = e.file_id if e is not None else None
        if file_id is not None:  # uploaded by a run killed before batches.create: reuse it
            try:
                self.client.files.retrieve(file_id)
            except self._oa.NotFoundError:
                file_id = None
            except self._oa.APIError:
                pass  # batches.create will say what is wrong
        if file_id is None:
            name = f"plug_lite-{self.job or 'calls'}-{h[:16]}.jsonl"
            f = self._api("uploading a batch file", lambda: self.client.files.create(
                file=(name, shard.data, "application/jsonl"), purpose="batch"))
            file_id = f.id
            self.counts["uploaded"] += 1
            self.ledger.write({"event": "uploaded", "shard": h, "attempt": attempt, "file_id": file_id,
                               "model": shard.model, "n": len(shard.calls), "bytes": len(shard.data), "keys": shard.keys})
        b, adopted = self._create(h, attempt, file_id)
        self.ledger.write({"event": "created", "shard": h, "attempt": attempt, "batch_id": b.id, "file_id": file_id,
                           **({"adopted": True} if adopted else {})})
        if adopted:
            self.counts["adopted"] += 1
            self.say(f"batch {b.id}: created although its answer was lost; found by its tag (shard {h[:12]}, "
                     f"attempt {attempt}), not submitted again")
        else:
            self.counts["created"] += 1
            self.say(f"batch {b.id}: submitted {len(shard.calls)} {shard.model} requests (shard {h[:12]}, "
                     f"attempt {attempt})")
        return self.ledger.entries[(h, attempt)]

    def _create(self, h: str, attempt: int, file_id: str) -> tuple[Any, bool]:
        """``batches.create`` for shard ``h``: (the batch, whether it was found by its tag). The
        openai client sends no idempotency key, so its own retry of a create whose answer was lost
        (a timeout, a dropped connection, a 5xx) would make a second batch of the same shard, paid
        twice. Here the create is sent once per try; after a failure that may have created the
        batch the account's batches are listed again and the one with the shard's tag is taken;
        only when there is none is the create sent again (``max_retries`` times, backing off)."""
        oa = self._oa
        meta = {TAG_SHARD: h, TAG_ATTEMPT: str(attempt), TAG_JOB: (self.job or "calls")[:64]}
        once = self.client.with_options(max_retries=0)
        tries = max(1, self.cfg.max_retries + 1)

        def create() -> tuple[Any, bool]:
            n = 0
            while True:
                try:
                    return once.batches.create(input_file_id=file_id, endpoint=self.url, completion_window="24h",
                                               metadata=meta), False
                except (oa.APIConnectionError, oa.APIStatusError) as e:
                    status = getattr(e, "status_code", None)
                    if status is not None and status not in (408, 409, 429) and status < 500:
                        raise  # refused: no batch was made
                    self._remote = None  # list again: the batch may exist
                    found = self._find_remote().get((h, str(attempt)))
                    if found is not None:
                        return found, True
                    n += 1
                    if n == tries:
                        raise
                    time.sleep(min(8.0, 0.5 * 2 ** (n - 1)))

        return self._api(f"creating a batch ({tries} {'try' if tries == 1 else 'tries'})", create)

    def _collect(self, e: _Entry, b: Any, calls: Mapping[str, Call]) -> tuple[Ingested, list[str], list[str]]:
        """Ingest an ended batch. Returns (what ingestion did, keys to resubmit, keys that
        failed this run)."""
        wanted = {k: calls[k] for k in e.keys if k in calls}
        rep = Ingested()
        gone: list[str] = []

        def download(fid: str) -> str | None:
            try:
                return self.client.files.content(fid).text
            except self._oa.NotFoundError:  # deleted, or past the batch's output_expires_after
                return None

        for fid in (b.output_file_id, b.error_file_id):
            if fid:
                text = self._api(f"downloading {fid}", lambda fid=fid: download(fid))
                if text is None:
                    gone.append(fid)
                    self.say(f"batch {b.id}: its result file {fid} is gone at the provider (deleted or expired); "
                             "the calls it held are not answered")
                    continue
                self.counts["downloaded"] += 1
                rep.add(ingest(_text_lines(text, f"{b.id}:{fid}"), self.cache, wanted, source=b.id))
        seen = rep.seen()
        missing = [k for k in wanted if k not in seen and k not in self.cache]
        missing_set = set(missing)
        if b.status in ("expired", "cancelled"):
            again = [k for k in wanted if k in rep.not_run or k in missing_set]
            failed = list(rep.failed)
        else:
            why = _batch_errors(b, [self.cfg.api_key]) if b.status == "failed" else None
            lost = (f"batch {b.id}: its result file {' and '.join(gone)} is gone (deleted or expired at the provider)"
                    if gone else f"batch {b.id} returned no line for this call")
            for k in missing:
                rep.failed[k] = f"batch {b.id} failed: {why}" if why is not None else lost
            for k in rep.not_run:
                rep.failed[k] = f"batch {b.id} did not run this call ({b.status})"
            again, failed = [], list(rep.failed)
        self.ledger.write({"event": "ended", "shard": e.shard, "attempt": e.attempt, "batch_id": b.id,
                           "status": b.status, "ok": len(rep.ok), "failed": len(failed), "resubmit": len(again),
                           "duplicates": rep.duplicates, "unknown": rep.unknown})
        self.say(f"batch {b.id}: {b.status}; {len(rep.ok)} answers cached, {len(failed)} failed"
                 + (f", {len(again)} to resubmit" if again else "")
                 + (f", {rep.duplicates} duplicate lines ignored" if rep.duplicates else ""))
        return rep, again, failed

    def _poll(self, entries: list[_Entry]) -> dict[str, Any]:
        """Retrieve each open batch until all have ended (``wait``) or once; returns the
        latest batch objects by id."""
        latest: dict[str, Any] = {}
        bar = None
        last_status: dict[str, str] = {}
        try:
            while True:
                for e in entries:
                    if e.batch_id in latest and latest[e.batch_id].status in TERMINAL:
                        continue
                    b = self._api(f"checking batch {e.batch_id}", lambda e=e: self.client.batches.retrieve(e.batch_id))
                    self.counts["polls"] += 1
                    latest[e.batch_id] = b
                    if last_status.get(b.id) != b.status:
                        last_status[b.id] = b.status
                        if b.status not in TERMINAL:
                            self.say(f"batch {b.id}: {b.status}")
                done = [b for b in latest.values() if b.status in TERMINAL]
                if self.wait:
                    bar = bar or _bar(sum(len(e.keys) for e in entries))
                    if bar is not None:
                        bar.update(sum(_done_count(latest[e.batch_id], len(e.keys)) for e in entries) - bar.n)
                if not self.wait or len(done) == len(entries):
                    return latest
                time.sleep(self.poll)
        finally:
            if bar is not None:
                bar.close()

    def _recover(self) -> None:
        """Adopt the batches of uploaded files the ledger has no batch for, found by their tag."""
        for e in self.ledger.unconfirmed():
            remote = self._find_remote().get((e.shard, str(e.attempt)))
            if remote is not None:
                self.ledger.write({"event": "created", "shard": e.shard, "attempt": e.attempt, "batch_id": remote.id,
                                   "file_id": remote.input_file_id, "adopted": True})
                self.counts["adopted"] += 1
                self.say(f"batch {remote.id}: found by its tag (shard {e.shard[:12]}, attempt {e.attempt}); "
                         "not submitted again")

    def run(self, calls: list[Call]) -> Dispatched:
        """Submit the uncached ``calls``, collect what has ended, resubmit the rest of expired or
        cancelled batches; with ``wait``, until every batch has ended."""
        by_key = {c.key: c for c in calls}
        out = Dispatched("batch")
        failed: dict[str, str] = {}
        total = Ingested()
        try:
            self.ledger.lock()
            self._recover()
            for _ in range(MAX_ROUNDS):
                open_entries = [e for e in self.ledger.open() if any(k in by_key for k in e.keys)]
                claimed = {k for e in open_entries for k in e.keys}
                todo = [c for c in calls if c.key not in self.cache and c.key not in claimed and c.key not in failed]
                shards = shard_calls(todo, url=self.url, max_lines=self.max_lines, max_bytes=self.max_bytes)
                entries = open_entries + [self._submit(s) for s in shards]
                entries = list({(e.shard, e.attempt): e for e in entries}.values())
                if not entries:
                    break
                latest = self._poll(entries)
                pending, resubmit = [], False
                for e in entries:
                    b = latest[e.batch_id]
                    if b.status not in TERMINAL:
                        pending.append(b.id)
                        continue
                    rep, again, bad = self._collect(e, b, by_key)
                    total.add(rep)
                    failed.update({k: rep.failed[k] for k in bad})
                    resubmit = resubmit or bool(again)
                out.pending = pending
                if not resubmit:  # the rest of an expired / cancelled batch goes out in the next round
                    break
            else:
                raise UserError(f"batches ended expired or cancelled {MAX_ROUNDS} times in a row; the answers they "
                                "gave are cached: rerun later for the rest")
        finally:
            self.ledger.close()
        out.by_batch = len(total.ok)
        out.failed = {k: v for k, v in failed.items() if k not in self.cache}
        out.counts = {**dict(self.counts), "duplicates": total.duplicates, "unknown": total.unknown}
        out.usage = dict(total.usage)
        return out


def _batch_errors(b: Any, secrets: Iterable[str | None] = ()) -> str:
    errs = getattr(getattr(b, "errors", None), "data", None) or []
    text = "; ".join(f"{getattr(x, 'code', '') or ''} {getattr(x, 'message', '') or ''}".strip() for x in errs[:3])
    return _one_line(text or "no reason given", secrets)


def _done_count(b: Any, total: int) -> int:
    if b.status in TERMINAL:
        return total
    rc = getattr(b, "request_counts", None)
    return min(total, (getattr(rc, "completed", 0) or 0) + (getattr(rc, "failed", 0) or 0)) if rc else 0


def _bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="batch", unit="call", file=sys.stderr, disable=None)


# --- one entry point for the jobs -------------------------------------------------------------------


def dispatch(calls: list[Call], cache: llm.CallCache, opts: BatchOptions, *, cfg: llm.LLMSettings | None,
             ledger: str | Path, job: str, say: Callable[[str], None] | None = None) -> Dispatched | None:
    """Run ``calls`` the way ``opts`` says: None for live calls (the job runs its own loop);
    else the :class:`Dispatched` of writing the request files, reading result files or the
    Batch API. Only calls not in ``cache`` are written or submitted."""
    mode = opts.check().mode
    if mode == "live":
        return None
    uncached = [c for c in calls if c.key not in cache]
    if mode == "write":
        written = write_requests(uncached, opts.write_requests, url=opts.batch_url)
        return Dispatched("write", written=written)
    if mode == "read":
        wanted = {c.key: c for c in uncached}
        rep = ingest_files(opts.read_results, cache, wanted)
        files = ", ".join(opts.read_results)
        failed = {k: rep.failed.get(k) or (f"not run by the batch ({files})" if k in rep.not_run
                                           else f"no result line in {files}")
                  for k in wanted if k not in cache}
        return Dispatched("read", by_batch=len(rep.ok), failed=failed, usage=dict(rep.usage),
                          counts={"duplicates": rep.duplicates, "unknown": rep.unknown,
                                  "already_cached": rep.already_cached})
    if cfg is None:
        raise UserError("--batch needs an endpoint (--base-url, or the OpenAI API with OPENAI_API_KEY)")
    runner = BatchRunner(cfg, cache, ledger, job=job, wait=opts.batch_wait, poll=opts.batch_poll, url=opts.batch_url,
                         say=say)
    return runner.run(uncached)
