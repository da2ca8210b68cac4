"""One OpenAI-compatible chat client and an on-disk call cache, shared by ``judge`` and
``translate``.

* :class:`LLMSettings` is an endpoint and how to call it, passed whole; :meth:`LLMSettings.resolved`
  fills model, base URL and key from ``PLUG_LITE_JUDGE_*``, then ``OPENAI_*`` environment
  variables. The key is kept out of every repr, message and file.
* :func:`chat_body` is the one owner of what a chat-completions request holds, live or written
  to a batch file (:mod:`plug_lite.llm_batch`).
* :class:`Client` wraps the official ``openai`` client. Retries with exponential backoff on 408,
  409, 429, 5xx, timeouts and dropped connections are the client's own (``max_retries``,
  ``timeout``); other statuses (400, 422...) are not retried, and error texts say how many
  retries actually happened; 401/403/404 raise :class:`FatalLLMError` at once.
* :func:`run_outcome` turns a run's counts into its exit status: 0 all good, 1 no call
  succeeded, 3 some calls failed (2 stays bad input).
* :class:`CallCache` is an append-only JSONL file keyed by a hash of everything that determines an
  answer; each call is fsynced as soon as it returns, so a killed run repeats no call (a batch's
  results, which can be downloaded again, are fsynced a block at a time).
* :func:`run_jobs` runs uncached calls on a thread pool; the first one runs alone, so a bad key or
  model name stops the run after one request whatever ``--parallel`` is.

Standard library only at import time; ``openai`` and ``tqdm`` are imported when needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from .io import JsonlAppender, UserError, read_json, read_jsonl_resumable, redact

__all__ = [
    "LLMSettings",
    "chat_body",
    "Client",
    "FatalLLMError",
    "CallCache",
    "cache_key",
    "run_jobs",
    "retries_done",
    "run_outcome",
    "calls_summary",
    "estimate_tokens",
    "PRICES",
    "price_for",
]

DEFAULT_MODEL = "gpt-4o-mini"


class FatalLLMError(UserError):
    """An error that retrying cannot fix (bad key, no permission): the run stops."""


@dataclass(frozen=True)
class LLMSettings:
    """An OpenAI-compatible endpoint and how to call it; ``judge``, ``translate`` and ``generate``
    take one whole (each field a flag: ``--model``, ``--base-url``, ...). Fields left None are
    found by :meth:`resolved`. The key is kept out of every repr, message and file."""

    model: str | None = field(default=None, metadata={"help": f"model name (env PLUG_LITE_JUDGE_MODEL; default {DEFAULT_MODEL})"})
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible base URL (env PLUG_LITE_JUDGE_BASE_URL / OPENAI_BASE_URL)"})
    api_key: str | None = field(default=None, repr=False, metadata={"help": "API key (prefer env OPENAI_API_KEY); never printed"})
    timeout: float = field(default=120.0, metadata={"help": "seconds per request"})
    max_retries: int = field(default=5, metadata={"help": "client retries on 408/409/429/5xx/timeouts (exponential backoff)"})
    temperature: float = 0.0
    max_tokens: int = field(default=1024, metadata={"help": "tokens per reply"})

    def resolved(self, *, need_key: bool = True) -> "LLMSettings":
        """These settings with the model, base URL and key filled from ``PLUG_LITE_JUDGE_*``, then
        ``OPENAI_*`` environment variables (model: :data:`DEFAULT_MODEL`). Without any key an
        endpoint that needs one (no ``base_url``) is a :class:`UserError` when ``need_key``."""
        env = os.environ
        model = self.model or env.get("PLUG_LITE_JUDGE_MODEL") or DEFAULT_MODEL
        base_url = self.base_url or env.get("PLUG_LITE_JUDGE_BASE_URL") or env.get("OPENAI_BASE_URL") or None
        key = self.api_key or env.get("PLUG_LITE_JUDGE_API_KEY") or env.get("OPENAI_API_KEY") or ""
        if not key:
            if need_key and not base_url:
                raise UserError(
                    "no API key: set OPENAI_API_KEY (or PLUG_LITE_JUDGE_API_KEY), or pass --base-url "
                    "for a local server (llama-server, vLLM, Ollama) that needs none"
                )
            key = "no-key"  # local servers ignore it; the client insists on a value
        return replace(self, model=model, base_url=base_url, api_key=key)

    def body(self, messages: list[dict], *, max_tokens: int | None = None) -> dict:
        """The request body of one call with these settings (:func:`chat_body`)."""
        return chat_body(self.model, messages, temperature=self.temperature, max_tokens=max_tokens or self.max_tokens)

    def public(self) -> dict:
        """Settings safe to write into a results file (no key)."""
        return {
            "model": self.model,
            "base_url": redact(self.base_url or "https://api.openai.com/v1", [self.api_key or ""]),
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }


def chat_body(model: str, messages: list[dict], *, temperature: float, max_tokens: int,
              seed: int | None = None) -> dict:
    """The body of one chat-completions request as plug_lite sends it, live or as a batch request
    line: only fields every OpenAI-compatible server reads (model, messages, temperature,
    max_tokens, and seed where the caller sets one)."""
    body = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
    if seed is not None:
        body["seed"] = seed
    return body


class Client:
    """A thin chat-completions client. ``chat`` returns ``(text, usage)``; it raises
    :class:`FatalLLMError` on 401/403/404 and :class:`CallError` on anything else that still
    fails after the client's retries."""

    def __init__(self, cfg: LLMSettings) -> None:
        import openai

        self.cfg = cfg
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=cfg.api_key, base_url=cfg.base_url, timeout=cfg.timeout, max_retries=cfg.max_retries
        )

    def chat(self, messages: list[dict], *, max_tokens: int | None = None) -> tuple[str, dict]:
        oa = self._openai
        try:
            resp = self._client.chat.completions.create(**self.cfg.body(messages, max_tokens=max_tokens))
        except (oa.AuthenticationError, oa.PermissionDeniedError) as e:
            raise FatalLLMError(
                f"the judge server refused the API key (HTTP {e.status_code}) at "
                f"{self.cfg.base_url or 'api.openai.com'}: check OPENAI_API_KEY / --api-key; stopped without retrying"
            ) from None
        except oa.NotFoundError as e:
            raise FatalLLMError(
                f"HTTP 404 from {self.cfg.base_url or 'api.openai.com'} for model {self.cfg.model!r}: "
                f"check --model and --base-url ({_short(e, self.cfg.api_key)})"
            ) from None
        except oa.APIStatusError as e:
            raise CallError(f"HTTP {e.status_code} ({retries_done(e)}): {_short(e, self.cfg.api_key)}") from None
        except oa.APITimeoutError as e:
            raise CallError(f"timed out after {self.cfg.timeout:g} s ({retries_done(e)})") from None
        except oa.APIConnectionError as e:
            raise CallError(f"connection failed ({retries_done(e)}): {_short(e, self.cfg.api_key)}") from None
        except oa.APIError as e:  # malformed responses and the like
            raise CallError(f"bad response: {_short(e, self.cfg.api_key)}") from None
        except ValueError as e:  # a 200 whose body is not JSON (the client's json.loads)
            raise CallError(f"the reply is not JSON ({_short(e, self.cfg.api_key)})") from None
        text, _, usage = completion_parts(resp)
        return text, {"prompt": usage["prompt"] or 0, "completion": usage["completion"] or 0} if usage["known"] else {}


def completion_parts(resp: Any) -> tuple[str, str, dict]:
    """(text, finish reason, usage) of a chat-completion reply: the one guard every endpoint reply
    passes, live (the client's reply object) or from a batch result file (the same as JSON). A
    reply that is not a chat completion with text (no ``choices``, an empty list, a
    ``message.content`` that is null or not a string) raises :class:`CallError`: the call counts as
    failed, is never cached or written, and the next run makes it again. An empty string is text
    (the model wrote nothing); what it is worth is the caller's to judge. ``usage``:
    ``{"prompt", "completion"}`` token counts (None when not reported) and ``known``."""
    try:
        choice = _part(resp, "choices")[0]
        message = _part(choice, "message")
        if message is None:
            raise TypeError
        text = _part(message, "content")
    except (AttributeError, IndexError, KeyError, TypeError):
        raise CallError("the reply is not a chat completion (it has no choices[0].message)") from None
    if not isinstance(text, str):
        raise CallError(f"the reply has no text (choices[0].message.content is {'null' if text is None else type(text).__name__})")
    usage = _part(resp, "usage")
    counts = {"prompt": _part(usage, "prompt_tokens"), "completion": _part(usage, "completion_tokens"),
              "known": usage is not None}
    return text, _part(choice, "finish_reason") or "stop", counts


def _part(obj: Any, name: str) -> Any:
    """A field of a reply object or of its JSON; None when absent."""
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


class CallError(Exception):
    """A call that failed for good; recorded as an error row, the run goes on."""


def retries_done(e: Exception) -> str:
    """How often the openai client retried the request that ended in ``e``, in words ("not
    retried", "after 1 retry", "after 5 retries"). The client numbers its attempts in the
    ``x-stainless-retry-count`` request header; a 400 or 422 is never retried."""
    request = getattr(e, "request", None)
    try:
        n = int(request.headers.get("x-stainless-retry-count"))
    except (AttributeError, TypeError, ValueError):
        return "retries unknown"
    if n == 0:
        return "not retried"
    return f"after {n} {'retry' if n == 1 else 'retries'}"


#: Exit statuses of a run of calls (judge, translate, generate), beside 2 for bad input.
EXIT_OK, EXIT_ALL_FAILED, EXIT_PARTIAL = 0, 1, 3


def run_outcome(*, made: int, failed: int, what: str, first_error: str | None = None) -> tuple[int, str | None]:
    """(exit status, one line for the user) for a run where ``made`` of its ``what`` (a plural
    noun: "judge calls", "answers") succeeded and ``failed`` failed for good: 0 and no line when
    nothing failed; 1 when some failed and none succeeded; 3 when some failed and some succeeded.
    Failures are never cached or written, so a rerun tries exactly those again."""
    if not failed:
        return EXIT_OK, None
    why = f" (first error: {first_error})" if first_error else ""
    if not made:
        return EXIT_ALL_FAILED, f"all {failed} {what} failed{why}; rerun to try them again"
    return EXIT_PARTIAL, (f"{failed} of {made + failed} {what} failed{why}; the {made} that succeeded are "
                          "kept, rerun to try the failed ones again")


def calls_summary(*, made: int, cached: int, by_batch: int, failed: int) -> str:
    """How a run's calls went, in one line: made live now, answered from the call cache, answered
    by a batch (:mod:`plug_lite.llm_batch`) and failed."""
    return f"calls: {made} made, {cached} cached, {by_batch} by batch, {failed} failed"


def _short(e: Exception, key: str | None = None) -> str:
    return redact(" ".join(str(e).split()), [key])[:200]


def cache_key(**parts: Any) -> str:
    """A content hash of everything that determines an answer."""
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallCache:
    """Append-only JSONL: one ``{"key", ...}`` record per finished call. The last record of a key
    wins. Thread-safe."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._data: dict[str, dict] = {}
        for n, rec in enumerate(read_jsonl_resumable(self.path), 1):
            if "key" in rec:
                if not isinstance(rec["key"], str):
                    raise UserError(f"{self.path}: record {n}: field 'key' is not text (not a plug-lite call cache?)")
                self._data[rec["key"]] = rec
        self._out: JsonlAppender | None = None
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def get(self, key: str) -> dict | None:
        return self._data.get(key)

    def put(self, key: str, record: dict) -> dict:
        rec = {"key": key, **record}
        with self._lock:
            if self._out is None:
                self._out = JsonlAppender(self.path)
            self._out.write(rec)
            self._data[key] = rec
        return rec

    def put_many(self, records: Iterable[tuple[str, dict]]) -> None:
        """:meth:`put` for several calls with one fsync (ingesting a batch's results)."""
        recs = [{"key": key, **record} for key, record in records]
        if not recs:
            return
        with self._lock:
            if self._out is None:
                self._out = JsonlAppender(self.path)
            self._out.write_many(recs)
            self._data.update((r["key"], r) for r in recs)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


def run_jobs(
    jobs: Iterable[Any],
    call: Callable[[Any], None],
    *,
    parallel: int = 4,
    desc: str = "calls",
) -> None:
    """Run ``call(job)`` for every job, ``parallel`` at a time; the first job runs alone.
    A :class:`FatalLLMError` stops everything (queued jobs are cancelled) and is re-raised."""
    jobs = list(jobs)
    if not jobs:
        return
    try:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=desc, file=sys.stderr, disable=None)
    except ImportError:  # tqdm is optional
        bar = None

    def one(job: Any) -> None:
        if stop.is_set():
            return
        call(job)
        if bar is not None:
            bar.update(1)

    stop = threading.Event()
    try:
        one(jobs[0])
        rest = jobs[1:]
        if not rest:
            return
        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [pool.submit(one, j) for j in rest]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for f in done:
                    if f.exception() is not None:
                        raise f.exception()
            except BaseException:  # a fatal error or Ctrl-C: run nothing more
                stop.set()
                for f in futures:
                    f.cancel()
                raise
    finally:
        if bar is not None:
            bar.close()


# --- cost estimate -------------------------------------------------------------------------------

#: USD per 1M tokens (input, output). Public list prices, November 2026; override with
#: --price-in/--price-out or --prices FILE (JSON {"model": [in, out]}).
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}


def price_for(
    model: str, *, price_in: float | None = None, price_out: float | None = None, prices_file: str | None = None
) -> tuple[float, float] | None:
    table = dict(PRICES)
    if prices_file:
        extra = read_json(prices_file)
        try:
            table.update({k: (float(v[0]), float(v[1])) for k, v in extra.items()})
        except (ValueError, TypeError, IndexError, AttributeError) as e:
            raise UserError(f"{prices_file}: expected JSON {{\"model\": [usd_in_per_1M, usd_out_per_1M]}} ({e})") from None
    base = table.get(model)
    if base is None:
        # longest known prefix ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini")
        for name in sorted(table, key=len, reverse=True):
            if model.startswith(name):
                base = table[name]
                break
    if price_in is not None or price_out is not None:
        base = (price_in if price_in is not None else (base or (0, 0))[0],
                price_out if price_out is not None else (base or (0, 0))[1])
    return base


def estimate_tokens(text: str) -> int:
    """A rough token count without a tokenizer: ~4 characters per token for Latin script, one
    token per CJK / Hangul / kana character."""
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return wide + (len(text) - wide + 3) // 4
