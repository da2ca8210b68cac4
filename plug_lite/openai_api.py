"""The OpenAI Chat Completions wire format, as ``plug-lite serve`` speaks it. Standard library only.

* :func:`parse_chat_request`: a request body checked field by field. Every field of OpenAI's
  ``chat.completions.create`` is known; those that change what a client gets and that a local
  model cannot honour (``n`` > 1, ``tools``, ``logprobs``, ``logit_bias``, JSON ``response_format``,
  audio) are refused with a 400 rather than silently ignored; bookkeeping fields (``user``,
  ``metadata``, ``store``, ``service_tier`` ...) are accepted and ignored; an unknown field is a
  400, as OpenAI answers it. Extras other servers accept: ``top_k``, ``min_p``,
  ``repeat_penalty`` (llama.cpp, Open WebUI), ``reasoning_format`` (llama.cpp: ``none`` is
  ``pivot: content``, ``deepseek`` and ``auto`` are ``pivot: reasoning``), and ``pivot``.
* Responses, stream chunks and errors shaped as OpenAI returns them: ``chat.completion`` and
  ``chat.completion.chunk`` objects with a ``chatcmpl-`` id shared by every chunk, ``created``
  in Unix seconds, ``system_fingerprint``, ``finish_reason`` ``stop``/``length``, ``usage`` with
  ``completion_tokens_details.reasoning_tokens``, a usage-only last chunk with empty ``choices``
  when ``stream_options.include_usage`` is set, and ``{"error": {"message", "type", "param",
  "code"}}`` bodies.
* :class:`PivotSplit`: where each section of a PLUG answer goes (:data:`PIVOT_MODES`):

  - ``reasoning`` (the default): the pivot instruction and draft, with their headers, in
    ``reasoning_content`` (the field DeepSeek's API, vLLM and llama.cpp's server use for a
    model's thinking, in ``message`` and in stream ``delta`` s); the target answer alone in
    ``content``. Every client shows ``content``, so the user sees the answer in their language;
    Open WebUI (since open-webui/open-webui#11066), LibreChat and Jan render
    ``reasoning_content`` as a collapsed "thinking" block,
    and the ``openai`` SDK exposes it as ``message.reasoning_content`` (an extra field) while
    ``message.content`` stays the answer.
  - ``hidden``: the target answer in ``content``, the pivot not sent at all (clients that show
    every field, or when the pivot must not leave the server).
  - ``content``: the model's whole output in ``content``, headers included, exactly as the
    model wrote it (what ``python -m llama_cpp.server`` returns).

  Text after the answer's sections (a model that repeats itself: ``extra``) is dropped in
  ``reasoning`` and ``hidden``; when no target section is found the end of the stream sends what
  the model wrote instead (:attr:`plug_lite.formats.PlugParse.answer`), as ``plug-lite chat``
  shows it. Mono and plain models have no pivot: their whole output is ``content``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import string
from dataclasses import dataclass, field

from . import formats
from .formats import StreamEvent
from .languages import Language

__all__ = ["PIVOT_MODES", "APIError", "ChatRequest", "parse_chat_request", "new_id", "usage", "completion",
           "chunk", "usage_chunk", "model_object", "error_body", "PivotSplit"]

PIVOT_MODES = ("reasoning", "hidden", "content")
ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 4

# OpenAI's create parameters that plug-lite serve accepts and does not act on.
_IGNORED = ("user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
            "prompt_cache_options", "prompt_cache_retention", "parallel_tool_calls", "reasoning_effort",
            "verbosity", "moderation")


class APIError(Exception):
    """A request the server refuses: HTTP ``status`` and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


# --------------------------------------------------------------------------------------------
# Requests


@dataclass
class ChatRequest:
    """A checked chat completion request. ``messages``: dicts with ``role`` and a string
    ``content``; ``sampling``: keywords for the engine besides temperature."""

    messages: list[dict]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    sampling: dict = field(default_factory=dict)
    pivot: str | None = None


def _bad(param: str, message: str) -> APIError:
    return APIError(400, message, param=param)


def _type_name(v) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def _check_bool(name: str, v) -> bool:
    if not isinstance(v, bool):
        raise _bad(name, f"'{name}' must be a boolean, got {_type_name(v)}")
    return v


def _check_int(name: str, v, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(name, f"'{name}' must be an integer, got {_type_name(v)}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _bad(name, f"'{name}' must be {_range(lo, hi)}, got {v}")
    return v


def _check_num(name: str, v, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(name, f"'{name}' must be a number, got {_type_name(v) if not isinstance(v, float) else v}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _bad(name, f"'{name}' must be {_range(lo, hi)}, got {v}")
    return float(v)


def _range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"between {lo} and {hi}"
    return f"at least {lo}" if lo is not None else f"at most {hi}"


def _text_content(where: str, content) -> str:
    """A message's content: a string, or an array of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _bad(f"{where}.content[{j}]", f"'{where}.content[{j}]' must be an object with a 'type'")
            if part["type"] != "text":
                raise _bad(f"{where}.content[{j}]",
                           f"content parts of type '{part['type']}' are not supported: this model reads text only")
            if not isinstance(part.get("text"), str):
                raise _bad(f"{where}.content[{j}].text", f"'{where}.content[{j}].text' must be a string")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"{where}.content", f"'{where}.content' must be a string or an array of text parts, got {_type_name(content)}")


def _message(i: int, m) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _bad(where, f"'{where}' must be an object, got {_type_name(m)}")
    role = m.get("role")
    if role in ("tool", "function"):
        raise _bad(f"{where}.role", f"'{where}': {role} messages are not supported (this server has no tools)")
    if role not in ROLES:
        raise _bad(f"{where}.role", f"'{where}.role' must be one of {', '.join(ROLES)}, got {role!r}")
    if m.get("tool_calls") or m.get("function_call"):
        raise _bad(f"{where}.tool_calls", f"'{where}': tool calls are not supported (this server has no tools)")
    if "content" not in m or (m["content"] is None and role != "assistant"):
        raise _bad(f"{where}.content", f"'{where}' has no 'content'")
    content = "" if m["content"] is None else _text_content(where, m["content"])
    return {"role": role, "content": content}


# JSON's \uD800-\uDFFF escapes: json.loads makes lone surrogates of those that are not a pair
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_B = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_surrogates(body: dict) -> None:
    """400 naming a string (or object key) of ``body`` that holds an unpaired UTF-16 surrogate:
    no text can be made of it (tokenizing it, logging it or echoing it in an error fails)."""
    todo: list[tuple[str, object]] = [("", body)]
    while todo:
        where, v = todo.pop()
        if isinstance(v, str) and not _encodable(v):
            raise _bad(where, f"'{where}' holds an unpaired UTF-16 surrogate: not text")
        if isinstance(v, dict):
            for k, x in v.items():
                name = k if _encodable(k) else json.dumps(k)[1:-1]  # written as its JSON escape
                path = f"{where}.{name}" if where else name
                if name != k:
                    raise _bad(path, f"the key '{path}' holds an unpaired UTF-16 surrogate: not text")
                todo.append((path, x))
        elif isinstance(v, list):
            todo.extend((f"{where}[{i}]", x) for i, x in enumerate(v))


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def parse_chat_request(body: bytes | str | dict) -> ChatRequest:
    """A chat completion request body, checked; raises :class:`APIError` (400) naming the field."""
    surrogates = False
    if not isinstance(body, dict):
        surrogates = bool((_SURROGATE_ESCAPE if isinstance(body, str) else _SURROGATE_ESCAPE_B).search(body))
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON ({e})") from None
        except RecursionError:  # arrays or objects nested thousands deep
            raise APIError(400, "the request body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {_type_name(body)}")
    if surrogates:
        _refuse_surrogates(body)
    known = set(ChatRequest.__dataclass_fields__) | set(_IGNORED) | {
        "messages", "max_completion_tokens", "top_p", "presence_penalty", "frequency_penalty", "stream_options", "n",
        "tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs", "logit_bias",
        "response_format", "modalities", "audio", "prediction", "web_search_options", "top_k", "min_p",
        "repeat_penalty", "reasoning_format"}
    known -= {"include_usage", "sampling"}
    for k in body:
        if k not in known:
            raise _bad(k, f"unrecognized request argument: '{k}'")
    if "messages" not in body:
        raise _bad("messages", "'messages' is required")
    msgs = body["messages"]
    if not isinstance(msgs, list):
        raise _bad("messages", f"'messages' must be an array, got {_type_name(msgs)}")
    if not msgs:
        raise _bad("messages", "'messages' is empty")
    req = ChatRequest(messages=[_message(i, m) for i, m in enumerate(msgs)])
    if not any(m["role"] == "user" for m in req.messages):
        raise _bad("messages", "'messages' has no user message")
    get = body.get
    if get("model") is not None:
        if not isinstance(body["model"], str):
            raise _bad("model", f"'model' must be a string, got {_type_name(body['model'])}")
        req.model = body["model"]
    if get("stream") is not None:
        req.stream = _check_bool("stream", body["stream"])
    opts = get("stream_options")
    if opts is not None:
        if not isinstance(opts, dict):
            raise _bad("stream_options", f"'stream_options' must be an object, got {_type_name(opts)}")
        if not req.stream:
            raise _bad("stream_options", "'stream_options' is only allowed when 'stream' is true")
        for k, v in opts.items():
            if k == "include_usage":
                req.include_usage = _check_bool("stream_options.include_usage", v)
            elif k != "include_obfuscation":
                raise _bad(f"stream_options.{k}", f"unrecognized request argument: 'stream_options.{k}'")
    for name in ("max_completion_tokens", "max_tokens"):
        if get(name) is not None:
            req.max_tokens = _check_int(name, body[name], 1)
    if get("temperature") is not None:
        req.temperature = _check_num("temperature", body["temperature"], 0, 2)
    if get("seed") is not None:
        req.seed = _check_int("seed", body["seed"], 0, 2**32 - 1)
    stop = get("stop")
    if stop is not None:
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("stop", "'stop' must be a string or an array of strings")
        if len(stop) > MAX_STOP:
            raise _bad("stop", f"'stop' takes at most {MAX_STOP} sequences, got {len(stop)}")
        req.stop = [s for s in stop if s]
    for name, lo, hi in (("top_p", 0, 1), ("presence_penalty", -2, 2), ("frequency_penalty", -2, 2),
                         ("min_p", 0, 1), ("repeat_penalty", 0, None)):
        if get(name) is not None:
            req.sampling[name] = _check_num(name, body[name], lo, hi)
    if get("top_k") is not None:
        req.sampling["top_k"] = _check_int("top_k", body["top_k"], 0)
    _refuse_unsupported(body)
    req.pivot = _pivot(body)
    return req


def _refuse_unsupported(body: dict) -> None:
    """400 for features that would change the answer and that this server does not have."""
    get = body.get
    if get("n") is not None and _check_int("n", body["n"], 1) != 1:
        raise _bad("n", "'n' must be 1: one answer per request")
    for name in ("tools", "functions"):
        if get(name):
            raise _bad(name, f"'{name}' are not supported (this server has no tools)")
    choice = get("tool_choice", get("function_call"))
    if choice not in (None, "none", "auto"):
        raise _bad("tool_choice", "'tool_choice' must be 'none' or 'auto' (this server has no tools)")
    if get("logprobs") is not None and _check_bool("logprobs", body["logprobs"]):
        raise _bad("logprobs", "'logprobs' are not supported")
    if get("top_logprobs") is not None:
        raise _bad("top_logprobs", "'top_logprobs' is not supported")
    if get("logit_bias"):
        raise _bad("logit_bias", "'logit_bias' is not supported")
    fmt = get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise _bad("response_format", "'response_format' must be {\"type\": \"text\"}: JSON modes are not supported")
    mods = get("modalities")
    if mods is not None and mods != ["text"]:
        raise _bad("modalities", "'modalities' must be [\"text\"]")
    for name in ("audio", "prediction", "web_search_options"):
        if get(name) is not None:
            raise _bad(name, f"'{name}' is not supported")


def _pivot(body: dict) -> str | None:
    if body.get("pivot") is not None:
        v = body["pivot"]
        if v not in PIVOT_MODES:
            raise _bad("pivot", f"'pivot' must be one of {', '.join(PIVOT_MODES)}, got {v!r}")
        return v
    if body.get("reasoning_format") is not None:
        v = body["reasoning_format"]
        mapped = {"none": "content", "deepseek": "reasoning", "auto": "reasoning"}.get(v) if isinstance(v, str) else None
        if mapped is None:
            raise _bad("reasoning_format", f"'reasoning_format' must be none, auto or deepseek, got {v!r}")
        return mapped
    return None


# --------------------------------------------------------------------------------------------
# Responses

_ALNUM = string.ascii_letters + string.digits


def new_id(prefix: str = "chatcmpl-") -> str:
    """An id in OpenAI's shape (``chatcmpl-`` and 29 letters and digits)."""
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(29))


def usage(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None = None) -> dict:
    out = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens}
    if reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return out


def completion(*, id: str, created: int, model: str, fingerprint: str, content: str,
               reasoning: str | None, finish_reason: str, usage: dict) -> dict:
    """A ``chat.completion`` object (one choice)."""
    message = {"role": "assistant", "content": content, "refusal": None}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"id": id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage}


def chunk(*, id: str, created: int, model: str, fingerprint: str, delta: dict,
          finish_reason: str | None = None) -> dict:
    """A ``chat.completion.chunk`` object (one choice)."""
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}


def usage_chunk(*, id: str, created: int, model: str, fingerprint: str, usage: dict) -> dict:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices, the usage."""
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": fingerprint, "choices": [], "usage": usage}


def model_object(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "plug-lite"}


# --------------------------------------------------------------------------------------------
# The PLUG split


class PivotSplit:
    """Turns a PLUG answer's :class:`~plug_lite.formats.StreamEvent` s into (field, text) pieces,
    ``field`` being ``reasoning_content`` or ``content``, for one of :data:`PIVOT_MODES` (the
    ``content`` mode sends the raw text and does not use this class). Joined, the reasoning pieces
    are the pivot sections with their headers, separated by blank lines."""

    def __init__(self, mode: str, pivot: Language) -> None:
        if mode not in ("reasoning", "hidden"):
            raise ValueError(f"PivotSplit is for reasoning or hidden, not {mode!r}")
        self.mode, self.pivot = mode, pivot
        self.section: str | None = None  # the reasoning section written last
        self.content_sent = False

    def pieces(self, events: list[StreamEvent]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for ev in events:
            if ev.section == "target":
                out.append(("content", ev.text))
                self.content_sent = self.content_sent or bool(ev.text)
            elif ev.section in ("preamble", "pivot_instruction", "pivot_response") and self.mode == "reasoning":
                text = ev.text
                if ev.section != self.section:
                    header = {"pivot_instruction": self.pivot.instruction_header,
                              "pivot_response": self.pivot.response_header}.get(ev.section)
                    text = ("\n\n" if self.section else "") + (formats.header_prefix(header) if header else "") + text
                    self.section = ev.section
                out.append(("reasoning_content", text))
        return out

    def finish(self, parse: formats.PlugParse | None) -> list[tuple[str, str]]:
        """After the last events: when the answer has no target section, what the model wrote
        instead goes to ``content`` so that the turn is not blank."""
        if parse is not None and parse.target is None and not self.content_sent and parse.answer:
            self.content_sent = True
            return [("content", parse.answer)]
        return []
