"""The PLUG answer format: render, parse, and parse while streaming. Standard library only.

A PLUG completion for target language zh with pivot en looks like::

    English instruction: <the user's instruction, restated in English>

    English response: <the answer in English>

    中文回复：<the answer in Chinese>

``mono`` (the baseline) is the target answer alone; ``pivot_only`` is the first two sections.
The opt-in ``think`` variant wraps the two pivot sections in ``<think>...</think>`` and writes the
target answer after it without a header, so reasoning-aware clients hide the pivot natively::

    <think>
    English instruction: ...

    English response: ...
    </think>

    <the answer in Chinese>

Parsing is lenient where models are sloppy and strict where meaning changes:

* a header is recognised only at the start of a line (or of a section body), in any letter case,
  with a half- or full-width colon, spaces around it, markdown bold (``**...**``) or a markdown
  heading mark (``##``) around it;
* one fallback: when no line starts with the target header, a target header written mid-line
  in the pivot response (``... English answer. 中文回复：...``, not glued to a preceding Latin
  letter or digit) starts the target section there;
* a header repeated before its section has any text is dropped (``中文回复：中文回复：...``);
* a section header that comes back after its section had text ends the useful part: what
  follows is kept only in ``extra`` (models that loop), never merged into an answer;
* statuses: ``ok``; ``truncated`` (the target header is there but its body is empty, or the
  generation was cut by a token limit); ``monolingual`` (no target section, but a pivot answer
  was written); ``not_found`` (no recognisable structure).

The streaming parser (:class:`StreamParser`) holds back only the text that could still turn
into a header, and its per-section output always equals the batch parse of the whole text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

from . import languages
from .io import UserError
from .languages import Language
from .spec import FORMATS, PlugSpec

__all__ = [
    "FORMATS",
    "SECTIONS",
    "STATUSES",
    "PlugParse",
    "AnswerRecord",
    "upgrade_answer",
    "StreamEvent",
    "StreamParser",
    "render",
    "render_plug",
    "render_mono",
    "render_pivot_only",
    "parse",
    "has_header",
    "header_prefix",
    "THINK_OPEN",
    "THINK_CLOSE",
]

#: Section names in the order a PLUG answer writes them. ``preamble`` is text before any header,
#: ``extra`` anything after the answer's sections (a model that repeats itself).
SECTIONS = ("preamble", "pivot_instruction", "pivot_response", "target", "extra")
STATUSES = ("ok", "truncated", "monolingual", "not_found")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

_PI, _PR, _T = "pivot_instruction", "pivot_response", "target"


def header_prefix(header: str) -> str:
    """A section header as written before its text: a full-width colon carries its own
    spacing, an ASCII colon is followed by one space."""
    return header if header.endswith("：") else header + " "


def _join(header: str, text: str) -> str:
    return header_prefix(header) + text


def _clean(name: str, text: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a string")
    text = text.strip()
    if not text:
        raise ValueError(f"{name} is empty")
    return text


def render_plug(
    pivot_instruction: str,
    pivot_response: str,
    target_response: str,
    *,
    target: str | Language,
    pivot: str | Language = "en",
    think: bool = False,
) -> str:
    """A PLUG completion (the assistant's whole turn)."""
    spec = PlugSpec("plug", target, pivot, think)
    t, p = spec.target_language, spec.pivot_language
    pivot_part = (
        _join(p.instruction_header, _clean("pivot_instruction", pivot_instruction))
        + "\n\n"
        + _join(p.response_header, _clean("pivot_response", pivot_response))
    )
    answer = _clean("target_response", target_response)
    if think:
        return f"{THINK_OPEN}\n{pivot_part}\n{THINK_CLOSE}\n\n{answer}"
    return pivot_part + "\n\n" + _join(t.response_header, answer)


def render_mono(target_response: str) -> str:
    """The mono-response baseline's completion: the target-language answer alone."""
    return _clean("target_response", target_response)


def render_pivot_only(pivot_instruction: str, pivot_response: str, *, pivot: str | Language = "en") -> str:
    """The pivot-only completion: instruction and answer restated in the pivot language."""
    p = languages.get(pivot)
    return (
        _join(p.instruction_header, _clean("pivot_instruction", pivot_instruction))
        + "\n\n"
        + _join(p.response_header, _clean("pivot_response", pivot_response))
    )


def render(
    fmt: str,
    *,
    target: str | Language,
    pivot: str | Language = "en",
    pivot_instruction: str | None = None,
    pivot_response: str | None = None,
    target_response: str | None = None,
    think: bool = False,
) -> str:
    """Render a completion in one of :data:`FORMATS`."""
    PlugSpec(fmt, target, pivot, think and fmt == "plug")  # one check of the combination
    if fmt == "plug":
        return render_plug(
            pivot_instruction or "", pivot_response or "", target_response or "",
            target=target, pivot=pivot, think=think,
        )
    if fmt == "mono":
        return render_mono(target_response or "")
    return render_pivot_only(pivot_instruction or "", pivot_response or "", pivot=pivot)


# --------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class PlugParse:
    """The sections of one completion. ``answer`` is what a user (or a judge) should see."""

    status: str
    target: str | None
    pivot_instruction: str | None
    pivot_response: str | None
    preamble: str
    extra: str
    format: str = "plug"

    @property
    def answer(self) -> str:
        """The target answer; when extraction failed, what the model actually wrote instead
        (the pivot answer for ``monolingual``, the whole stripped text for ``not_found``)."""
        if self.target is not None:
            return self.target
        if self.format == "pivot_only" and self.pivot_response is not None:
            return self.pivot_response
        if self.pivot_response:
            return self.pivot_response
        parts = [self.preamble, self.pivot_instruction or "", self.extra]
        return "\n\n".join(p for p in parts if p)



@dataclass(frozen=True)
class AnswerRecord:
    """One model answer as plug-lite writes it down: the raw ``output``, what :func:`parse` made
    of it, and the spec it was parsed under. ``generate`` (one line of an answers file), ``chat``
    (``--json``, :meth:`plug_lite.chat.Turn.to_dict`) and ``extract`` all write this record;
    judge, report and metrics read it.

    ``target`` is the target *language* and ``target_response`` the answer written in it;
    ``pivot`` is None when no pivot is written (``mono``). ``status`` is one of
    :data:`STATUSES`, or ``plain`` for a chat model without PLUG metadata. ``format`` is one of
    :data:`FORMATS`, ``plain``, ``translate_test`` (generate's baseline) or ``plug_prompted`` (an
    untrained model asked for the PLUG format, :mod:`plug_lite.prompted`; parsed as ``plug``). ``preamble`` and
    ``extra`` (text before and after the sections) are shown by chat and extract but not kept in
    an answers file.
    """

    output: str
    answer: str
    status: str
    target_response: str | None
    pivot_instruction: str | None = None
    pivot_response: str | None = None
    format: str | None = None
    target: str | None = None
    pivot: str | None = None
    preamble: str = ""
    extra: str = ""

    #: An answers file's fields of the record, in the order they are written.
    FIELDS: ClassVar[tuple[str, ...]] = ("output", "answer", "status", "target_response", "pivot_instruction",
                                         "pivot_response", "format", "target", "pivot")

    @classmethod
    def from_parse(cls, parsed: PlugParse, output: str, spec: PlugSpec | None = None) -> "AnswerRecord":
        """The record of ``output`` parsed as ``parsed`` (``spec``: the format and languages it was
        parsed under; without one only the parse's format is known)."""
        return cls(output=output, answer=parsed.answer, status=parsed.status, target_response=parsed.target,
                   pivot_instruction=parsed.pivot_instruction, pivot_response=parsed.pivot_response,
                   format=spec.format if spec else parsed.format, target=spec.target if spec else None,
                   pivot=spec.pivot_used if spec else None, preamble=parsed.preamble, extra=parsed.extra)

    @classmethod
    def parsed(cls, output: str, spec: PlugSpec, *, finished: bool = True) -> "AnswerRecord":
        """Parse ``output`` as ``spec`` says (``finished=False``: cut by a token limit) and record it."""
        return cls.from_parse(parse(output, **spec.parser_args(), finished=finished), output, spec)

    @classmethod
    def plain(cls, output: str) -> "AnswerRecord":
        """The answer of a model without PLUG metadata: its whole text, status ``plain``."""
        text = output.strip()
        return cls(output=output, answer=text, status="plain", target_response=text, format="plain")

    @classmethod
    def from_dict(cls, d: dict) -> "AnswerRecord":
        """The record in a line of an answers file, written by any version (:func:`upgrade_answer`)."""
        d = upgrade_answer(d)
        return cls(**{k: d.get(k) for k in cls.FIELDS if k not in ("output", "answer", "status")},
                   output=d.get("output") or "", answer=d.get("answer") or "", status=d.get("status") or "",
                   preamble=d.get("preamble") or "", extra=d.get("extra") or "")

    def to_dict(self) -> dict:
        """The record's fields of an answers file (:data:`FIELDS`)."""
        return {k: getattr(self, k) for k in self.FIELDS}

    def extract_fields(self) -> dict:
        """What ``plug-lite extract`` adds to a record of its own: the answer and status under
        other names (``extracted``, ``extract_status``), since the record may hold an ``answer``
        and a ``status`` already, and the sections."""
        return {"extracted": self.answer, "extract_status": self.status, "pivot_instruction": self.pivot_instruction,
                "pivot_response": self.pivot_response, "target_response": self.target_response,
                "extract_preamble": self.preamble, "extract_extra": self.extra}


#: Answer-record fields read as text (a language code for ``target`` / ``pivot``): a string or null.
_TEXT_FIELDS = ("target", "pivot", "answer", "output", "status", "finish_reason", "pivot_instruction",
                "pivot_response", "target_response")


def upgrade_answer(rec: dict) -> dict:
    """An answer record in today's field names. Records written before the language was named
    ``target`` everywhere hold it in ``lang`` and the target-language answer in ``target``;
    they are returned renamed (a new dict), others unchanged. A field of the wrong type (a
    language that is not a string, ``tokens`` that is not an object of counts, ...) is a
    :class:`~plug_lite.io.UserError` naming the record (``_where``) and the field."""
    if "lang" in rec and "target_response" not in rec:
        out = {k: v for k, v in rec.items() if k not in ("lang", "target")}
        out["target_response"] = rec.get("target")
        out["target"] = rec["lang"]
        rec = out
    _check_answer_types(rec)
    return rec


def _check_answer_types(rec: dict) -> None:
    where = rec.get("_where", "answer record")

    def bad(field: str, want: str):
        raise UserError(f"{where}: field {field!r} must be {want}, not {_json_text(rec[field])}")

    for f in _TEXT_FIELDS:
        if rec.get(f) is not None and not isinstance(rec[f], str):
            bad(f, "a string")
    tokens = rec.get("tokens")
    if tokens is not None:
        if not isinstance(tokens, dict):
            bad("tokens", "an object of token counts")
        for k, v in tokens.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise UserError(f"{where}: field 'tokens.{k}' must be a number, not {_json_text(v)}")
    sec = rec.get("seconds")
    if sec is not None and (isinstance(sec, bool) or not isinstance(sec, (int, float))):
        bad("seconds", "a number")


def _json_text(value) -> str:
    """A short JSON rendering of a bad value for an error line."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


_MARK = r"(?:\*\*|__)"


@dataclass(frozen=True)
class _Midline:
    find: re.Pattern
    match: re.Pattern
    partial: re.Pattern

    def search(self, text: str, lo: int, hi: int) -> re.Match | None:
        """The first target header written mid-line in ``text[lo:hi]``. Each place the name
        occurs is checked from where its header would start (an opening bold mark and spaces
        before the name belong to it)."""
        for hit in self.find.finditer(text, lo, hi):
            b = hit.start()
            while b > lo and text[b - 1] in " \t":
                b -= 1
            starts = ([b - 2] if b - 2 >= lo and text[b - 2:b] in ("**", "__") else []) + [b]
            if b < hit.start():
                starts.append(b + 1)
            for st in starts:
                m = self.match.match(text, st, hi)
                if m:
                    return m
        return None

    def tail_start(self, text: str, lo: int, end: int) -> int:
        """A place at or before the start of any text in ``text[lo:end]`` that could still grow
        into a header: back over trailing spaces and marks, the name's length, spaces, an
        opening mark. Keeps the ``partial`` search to the end of the line."""
        w = end
        while w > lo and text[w - 1] in " \t*_":
            w -= 1
        w = max(lo, w - len(self.find.pattern))
        while w > lo and text[w - 1] in " \t":
            w -= 1
        return max(lo, w - 2)


@lru_cache(maxsize=256)
def _header_table(pivot: str, target: str, fmt: str) -> tuple:
    """(regex, {lower-cased header name: section}, names, :class:`_Midline` or None) for one
    (pivot, target, format); the mid-line target header is looked for only in ``plug``."""
    p, t = languages.get(pivot), languages.get(target)
    names: dict[str, str] = {}

    def add(header: str, section: str) -> None:
        names[header.rstrip().rstrip(":：").rstrip().lower()] = section

    if fmt in ("plug", "pivot_only"):
        add(p.instruction_header, _PI)
        add(p.response_header, _PR)
    if fmt in ("plug", "mono"):
        add(t.response_header, _T)
    alternation = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    # Line start, optional heading mark, optional bold opening, the name, the colon; a closing
    # bold mark is accepted before or after the colon only when one was opened.
    pattern = re.compile(
        r"[ \t]*(?:#{1,6}[ \t]+)?(?P<open>" + _MARK + r")?[ \t]*(?P<name>" + alternation + r")"
        r"[ \t]*(?(open)(?P<close>" + _MARK + r")?)[ \t]*[:：]"
        r"(?(open)(?(close)|(?:[ \t]*" + _MARK + r")?))[ \t]*",
        re.IGNORECASE,
    )
    midline = None
    if fmt == "plug":
        # The target header written mid-line ("... English answer. 中文回复：..."): same marks and
        # colons, not glued to a preceding Latin letter or digit. ``find`` locates the name fast,
        # ``match`` checks a header starting at a given place, and ``partial`` finds text at the
        # end of the buffer that could still grow into one (for the streaming hold-back).
        raw = t.response_header.rstrip().rstrip(":：").rstrip().lower()
        name, glue = re.escape(raw), r"(?<![A-Za-z0-9])"
        prefixes = ""
        for ch in reversed(raw):  # "abc" -> a(?:b(?:c)?)?: any non-empty prefix of the name
            prefixes = re.escape(ch) + (f"(?:{prefixes})?" if prefixes else "")
        midline = _Midline(
            find=re.compile(name, re.IGNORECASE),
            match=re.compile(
                glue + r"(?P<open>" + _MARK + r")?[ \t]*" + name + r"[ \t]*(?(open)(?P<close>" + _MARK + r")?)"
                r"[ \t]*[:：](?(open)(?(close)|(?:[ \t]*" + _MARK + r")?))[ \t]*",
                re.IGNORECASE,
            ),
            partial=re.compile(
                glue + r"(?:(?:\*\*|__|\*|_)[ \t]*"
                r"|(?:" + _MARK + r")?[ \t]*" + prefixes +
                r"|(?:" + _MARK + r")?[ \t]*" + name + r"[ \t]*(?:\*\*|__|\*|_)?[ \t]*)\Z",
                re.IGNORECASE,
            ),
        )
    return pattern, names, tuple(names), midline


def _could_become_header(fragment: str, table) -> bool:
    """True when ``fragment`` (text from a line start to the end of the buffer, no newline) is
    a header, or could still become one or grow its closing mark as more text arrives."""
    pattern, _, names = table[:3]
    m = pattern.match(fragment)
    if m:
        # A complete header: it may still grow a closing bold mark, so hold while only
        # spaces or mark characters follow it.
        return fragment[m.end():].strip(" \t*_") == ""
    s = fragment.lstrip(" \t")
    hashes = len(s) - len(s.lstrip("#"))
    if hashes:
        if hashes > 6:
            return False
        s = s[hashes:]
        if not s:
            return True
        if s[0] not in " \t":
            return False
        s = s.lstrip(" \t")
    for mark in ("**", "__", "*", "_"):
        if s.startswith(mark):
            s = s[len(mark):]
            break
    s = s.lstrip(" \t").lower()
    if not s:
        return True
    for name in names:
        if name.startswith(s):
            return True
        if s.startswith(name):
            rest = s[len(name):]
            if rest.strip(" \t*_") == "":
                return True
    return False


@dataclass
class _Segment:
    section: str
    start: int  # body start in the text
    end: int
    header: bool = True  # False for text before the first header
    midline: int | None = None  # where a target header found mid-line starts (the fallback)


def _segments(text: str, table, fmt: str, think: bool | None) -> list[_Segment]:
    """Split ``text`` into sections. Used by both the batch and the streaming parser."""
    segs: list[_Segment] = []
    n = len(text)
    pos = 0
    # ``<think>`` at the very start switches to the think variant.
    lead = len(text) - len(text.lstrip())
    think_mode = fmt == "plug" and think is not False and text.startswith(THINK_OPEN, lead)
    if think_mode:
        pos = lead + len(THINK_OPEN)
        close = text.find(THINK_CLOSE, pos)
        inner_end = n if close < 0 else close
        segs.extend(_split_headers(text, pos, inner_end, table, default=_PR))
        if close >= 0:
            # After </think> comes the answer; a target header there is optional.
            segs.extend(_split_headers(text, close + len(THINK_CLOSE), n, table, default=_T))
        return segs
    default = _T if fmt == "mono" else "preamble"
    segs = _split_headers(text, pos, n, table, default=default)
    return _midline_target(text, segs, table) if fmt == "plug" else segs


def _midline_target(text: str, segs: list[_Segment], table) -> list[_Segment]:
    """The fallback for a target header that no line starts with: when no target section was
    found, the first target header written mid-line in a pivot-response body starts it."""
    midline: _Midline | None = table[3]
    if midline is None or any(s.section == _T for s in segs):
        return segs
    for i, seg in enumerate(segs):
        if seg.section != _PR:
            continue
        m = midline.search(text, seg.start, seg.end)
        if m:
            cut = _Segment(_PR, seg.start, m.start())
            return segs[:i] + [cut, _Segment(_T, m.end(), seg.end, midline=m.start())] + segs[i + 1:]
    return segs


def _midline_hold(text: str, end: int, segs: list[_Segment], table) -> int:
    """Where streaming must stop showing text so that a mid-line target header is never shown
    as pivot text: at a mid-line header found so far (until a line-start target header makes the
    fallback moot, or the end), or at the tail of the last line when it could still become one."""
    midline: _Midline | None = table[3]
    if midline is None:
        return end
    for seg in segs:
        if seg.section == _T:
            return seg.midline if seg.midline is not None else end
    last = segs[-1] if segs else None
    if last is None or last.section != _PR:
        return end
    lo = max(last.start, text.rfind("\n", 0, end) + 1)  # a mid-line header has no line break
    m = midline.partial.search(text, midline.tail_start(text, lo, end), end)
    return m.start() if m else end


def _split_headers(text: str, start: int, end: int, table, default: str) -> list[_Segment]:
    segs = [_Segment(default, start, start, header=False)]
    pos = start
    line_start = True
    while pos < end:
        if line_start:
            m = table[0].match(text, pos)
            if m and m.end() <= end:
                section = table[1][m.group("name").lower()]
                segs[-1].end = pos
                segs.append(_Segment(section, m.end(), m.end()))
                pos = m.end()
                # A header directly after a header (or at the start of a body) counts as a
                # line start: "中文回复：中文回复：..." repeats the header.
                line_start = True
                continue
        nl = text.find("\n", pos, end)
        if nl < 0:
            pos = end
            break
        pos = nl + 1
        line_start = True
    segs[-1].end = end
    return segs


def _assemble(text: str, segs: list[_Segment]) -> dict[str, str | None]:
    """Fold segments into sections: the first occurrence wins, a header repeated before its
    section has text is dropped, and a section that comes back after having text (or a section
    out of order) starts ``extra``, which runs to the end of the text."""
    out: dict[str, list[str]] = {s: [] for s in SECTIONS}
    has_text: set[str] = set()
    order = {s: i for i, s in enumerate(SECTIONS)}
    furthest = -1
    extra_start: int | None = None
    for seg in segs:
        body = text[seg.start:seg.end]
        if not seg.header and not body.strip():
            continue
        sec = seg.section
        if sec != "preamble" and (sec in has_text or order[sec] < furthest):
            extra_start = text.rfind("\n", 0, seg.start) + 1 if seg.header else seg.start
            break
        out[sec].append(body)
        if body.strip() and sec != "preamble":
            has_text.add(sec)
            furthest = max(furthest, order[sec])
    result: dict[str, str | None] = {
        sec: ("".join(out[sec]).strip() if out[sec] else None) for sec in (_PI, _PR, _T)
    }
    result["preamble"] = "".join(out["preamble"]).strip()
    result["extra"] = text[extra_start:].strip() if extra_start is not None else ""
    return result


def parse(
    text: str,
    *,
    target: str | Language,
    pivot: str | Language = "en",
    fmt: str = "plug",
    finished: bool = True,
    think: bool | None = None,
) -> PlugParse:
    """Parse one completion. ``finished=False`` means generation stopped at a token limit.

    ``think=None`` accepts both the plain and the ``<think>`` variant; ``False`` only the plain.
    """
    spec = PlugSpec(fmt, target, pivot)
    table = _header_table(spec.pivot_language.code, spec.target, fmt)
    secs = _assemble(text, _segments(text, table, fmt, think))
    return _finish(secs, fmt, finished)


def _finish(secs: dict, fmt: str, finished: bool) -> PlugParse:
    target, pi, pr = secs[_T], secs[_PI], secs[_PR]
    if fmt == "pivot_only":
        if pr:
            status = "ok" if finished else "truncated"
        elif pr is not None or not finished:
            status = "truncated"
        else:
            status = "not_found"
    elif target is not None:
        status = "ok" if (target and finished) else "truncated"
    elif not finished and (pi is not None or pr is not None):
        status = "truncated"
    elif pr:
        status = "monolingual"
    else:
        status = "not_found"
    return PlugParse(
        status=status,
        target=target,
        pivot_instruction=pi,
        pivot_response=pr,
        preamble=secs["preamble"],
        extra=secs["extra"],
        format=fmt,
    )


def has_header(text: str, *, target: str | Language, pivot: str | Language = "en", fmt: str = "plug") -> bool:
    """Whether ``text`` holds something the parser would read as a header or think tag (at a
    line start, or a prefix of one at its end). Text for a round trip must not."""
    spec = PlugSpec(fmt, target, pivot)
    table = _header_table(spec.pivot_language.code, spec.target, fmt)
    if THINK_OPEN in text or THINK_CLOSE in text:
        return True
    lines = text.split("\n")
    for line in lines:
        if table[0].match(line):
            return True
    # Only the last line can still grow into a header; a blank line cannot be one.
    last = lines[-1]
    return bool(last.strip()) and _could_become_header(last, table)


# --------------------------------------------------------------------------------------------
# Streaming


@dataclass(frozen=True)
class StreamEvent:
    """A piece of text and the section it belongs to."""

    section: str
    text: str


class StreamParser:
    """Feed text deltas, get :class:`StreamEvent` s.

    The text of each section, joined over all events, equals the batch :func:`parse` of the
    whole text, whatever the split. Text that could still become a header is held back until it
    cannot (at most one line, or a few characters of ``</think>``); trailing whitespace is held
    until more text arrives. ``section`` tells which section is being written now.
    """

    def __init__(
        self,
        *,
        target: str | Language,
        pivot: str | Language = "en",
        fmt: str = "plug",
        think: bool | None = None,
    ) -> None:
        spec = PlugSpec(fmt, target, pivot)
        self.target, self.pivot = spec.target_language, spec.pivot_language
        self.fmt, self.think = fmt, think
        self._table = _header_table(self.pivot.code, self.target.code, fmt)
        self._buf = ""
        self._emitted: dict[str, str] = {s: "" for s in SECTIONS}
        self.section: str | None = None
        self.result: PlugParse | None = None

    @property
    def text(self) -> str:
        return self._buf

    def _safe_end(self) -> int:
        buf = self._buf
        n = len(buf)
        # A partial "</think>" or "<think>" anywhere at the end.
        if self.fmt == "plug" and self.think is not False:
            for tag in (THINK_CLOSE, THINK_OPEN):
                for k in range(min(len(tag) - 1, n), 0, -1):
                    if buf.endswith(tag[:k]):
                        return self._line_hold(n - k)
        return self._line_hold(n)

    def _line_hold(self, end: int) -> int:
        """Move ``end`` back to the start of the last line (or body start) when the text from
        there could still become a header."""
        buf = self._buf
        # Nothing but (a prefix of) "<think>" so far: the variant is not decided yet.
        if self.fmt == "plug" and self.think is not False and THINK_OPEN.startswith(buf[:end].lstrip()):
            return 0
        segs = _segments(buf[:end], self._table, self.fmt, self.think)
        starts = {buf.rfind("\n", 0, end) + 1}
        if segs:
            starts.add(segs[-1].start)
        cut = end
        for s in sorted(starts, reverse=True):
            if s <= cut and _could_become_header(buf[s:cut], self._table):
                cut = s
        if cut != end:
            segs = _segments(buf[:cut], self._table, self.fmt, self.think)
        # Then the mid-line target header, judged on the text that would be shown.
        return _midline_hold(buf, cut, segs, self._table)

    def _emit(self, text: str, final: bool, finished: bool = True) -> list[StreamEvent]:
        segs = _segments(text, self._table, self.fmt, self.think)
        secs = _assemble(text, segs)
        events: list[StreamEvent] = []
        current = segs[-1].section if segs else None
        for sec in SECTIONS:
            # Sections come stripped on both sides, so trailing whitespace is held back.
            value = secs[sec] or ""
            old = self._emitted[sec]
            if value.startswith(old):
                piece = value[len(old):]
            else:  # cannot happen when the hold-back is right; never show text twice
                piece = ""
                value = old
            if piece:
                events.append(StreamEvent(sec, piece))
                self._emitted[sec] = value
        if secs["extra"]:
            current = "extra"
        self.section = current
        if final:
            self.result = _finish(secs, self.fmt, finished)
        return events

    def feed(self, delta: str) -> list[StreamEvent]:
        """Add generated text; returns the events it made safe to show."""
        if self.result is not None:
            raise RuntimeError("StreamParser.feed() after close()")
        self._buf += delta
        return self._emit(self._buf[: self._safe_end()], final=False)

    def close(self, finished: bool = True) -> list[StreamEvent]:
        """End of generation: flush what was held and set :attr:`result` (``finished=False``
        when generation stopped at a token limit)."""
        if self.result is not None:
            return []
        return self._emit(self._buf, final=True, finished=finished)

    def emitted(self, section: str) -> str:
        """All text emitted so far for ``section``."""
        return self._emitted[section]
