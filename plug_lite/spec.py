"""What a PLUG model is: its format, target language, pivot language and think variant, checked
once. Standard library only.

A :class:`PlugSpec` travels with a model from its training rows to its GGUF file, and this module
is the one place that knows how it is written at each stop:

=====================  =========================================================================
training rows          ``format``, ``target``, ``pivot`` fields of every row (:meth:`row_fields`)
``plug_run.json``      ``format``, ``target``, ``pivot``, ``think`` (:meth:`run_fields`; read back
                       by :meth:`plug_lite.runs.RunRecord.from_dict`)
GGUF metadata          ``plug.format``, ``plug.target``, ``plug.pivot``, ``plug.think``
                       (:data:`PLUG_KEYS`, :meth:`gguf_fields`, :meth:`from_gguf`)
answer records         ``format``, ``target``, ``pivot`` (:class:`plug_lite.formats.AnswerRecord`,
                       whose :func:`~plug_lite.formats.upgrade_answer` reads the names used
                       before: ``lang`` for the language, ``target`` for the text)
=====================  =========================================================================

``target`` always names the target *language* (a registered code); the target-language answer a
model wrote is ``target_response``, as in :func:`plug_lite.formats.render`.

The rules: the format is one of :data:`FORMATS`; both languages are registered; the pivot differs
from the target except in ``mono`` (which writes no pivot part, so its pivot may be anything, the
target included, or none); ``think`` is a variant of ``plug`` only. The system prompts of each
format live here too (:meth:`PlugSpec.system_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import languages
from .io import UserError
from .languages import Language, LanguageError

__all__ = [
    "FORMATS",
    "PLUG_KEYS",
    "EXPORT_KEY",
    "SpecError",
    "PlugSpec",
    "system_prompt",
    "parse_flag",
]

#: Training / answer formats. ``plug``: pivot instruction, pivot answer, then the target answer;
#: ``mono``: the target answer only (the paper's baseline); ``pivot_only``: the pivot part only.
FORMATS = ("plug", "mono", "pivot_only")

#: The GGUF metadata keys of a spec (string values, written by ``plug-lite export``).
PLUG_KEYS = ("plug.format", "plug.target", "plug.pivot", "plug.think")
#: The GGUF key naming the export that wrote a file (``export_id`` in ``export_report.json``): a
#: file replaced by another export no longer matches its run's record.
EXPORT_KEY = "plug.export"


class SpecError(UserError, LanguageError):
    """A format / language combination that is not a PLUG model. One line; a :class:`UserError`
    for the command line (exit code 2) and a :class:`LanguageError` (a ``ValueError``) for code
    that catches those."""


def parse_flag(value) -> bool | None:
    """A recorded true/false (``plug.think`` is the string ``"true"`` or ``"false"``); None for
    nothing recorded."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _code(value: str | Language) -> str:
    return languages.get(value).code


@dataclass(frozen=True)
class PlugSpec:
    """One PLUG model's answer format. Build it with codes or :class:`Language` objects; it holds
    the codes. ``pivot`` is None only for a ``mono`` spec that recorded none."""

    format: str
    target: str
    pivot: str | None = "en"
    think: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise SpecError(f"unknown format {self.format!r}; expected one of {', '.join(FORMATS)}")
        object.__setattr__(self, "target", _code(self.target))
        pivot = self.pivot if self.pivot not in (None, "") else (None if self.format == "mono" else "en")
        object.__setattr__(self, "pivot", None if pivot is None else _code(pivot))
        object.__setattr__(self, "think", bool(self.think))
        if self.format != "mono" and self.pivot == self.target:
            raise SpecError(f"the pivot language must differ from the target language ({self.target!r})")
        if self.think and self.format != "plug":
            raise SpecError("--think is a variant of the plug format only")

    # -- the languages
    @property
    def target_language(self) -> Language:
        return languages.get(self.target)

    @property
    def pivot_language(self) -> Language:
        """The pivot's :class:`Language` (English for a mono spec that recorded none)."""
        return languages.get(self.pivot or "en")

    @property
    def pivot_used(self) -> str | None:
        """The pivot a completion is written in: None for ``mono``, which writes none."""
        return None if self.format == "mono" else self.pivot

    def parser_args(self) -> dict:
        """``target``, ``pivot`` and ``fmt`` for :func:`plug_lite.formats.parse` and friends."""
        return {"target": self.target, "pivot": self.pivot or "en", "fmt": self.format}

    # -- what the model is told
    def system_prompt(self) -> str:
        """The system prompt a model of this spec is trained and run with."""
        t = self.target_language
        if self.format == "mono":
            return _fill(t.mono_prompt or MONO_PROMPT, t, None)
        p = self.pivot_language
        if self.format == "pivot_only":
            return _fill(PIVOT_ONLY_PROMPT, t, p)
        if self.think:
            return _fill(PLUG_THINK_PROMPT, t, p)
        return _fill(t.plug_prompt or PLUG_PROMPT, t, p)

    # -- conversions
    def row_fields(self) -> dict:
        """The fields every training row of this spec carries."""
        return {"format": self.format, "target": self.target, "pivot": self.pivot}

    def run_fields(self) -> dict:
        """The spec's fields of ``plug_run.json`` (and of ``data``'s summary)."""
        return {"format": self.format, "target": self.target, "pivot": self.pivot, "think": self.think}

    @classmethod
    def from_rows(cls, rows: list[dict], **defaults) -> "PlugSpec":
        """The spec of training rows: ``format``, ``target`` and ``pivot`` as the rows record them
        when they all agree, else as ``defaults`` says; ``think`` when a row is a think row."""
        values = {}
        for key in ("format", "target", "pivot"):
            found = {r.get(key) for r in rows if r.get(key)}
            values[key] = found.pop() if len(found) == 1 else defaults.get(key)
        return cls(values["format"], values["target"], values["pivot"], any(r.get("think") for r in rows))

    def gguf_fields(self) -> dict[str, str]:
        """The GGUF metadata of this spec: :data:`PLUG_KEYS` with string values."""
        return dict(zip(PLUG_KEYS, (self.format, self.target, self.pivot or "", "true" if self.think else "false")))

    @staticmethod
    def gguf_values(metadata: dict) -> dict:
        """What a GGUF's metadata records of a spec, by field name (``format``, ``target``,
        ``pivot``, ``think``), leaving out keys that are absent or empty."""
        out = {k.split(".", 1)[1]: metadata[k] for k in PLUG_KEYS if metadata.get(k) not in (None, "")}
        if "think" in out:
            out["think"] = parse_flag(out["think"])
        return out

    @classmethod
    def from_gguf(cls, metadata: dict, *, where: str = "the GGUF", **overrides) -> "PlugSpec | None":
        """The spec recorded in a GGUF's metadata, with ``overrides`` (fields given as None are
        not overrides); None when neither records a format, a target or a pivot (a plain chat
        model). ``think`` counts for the plug format only."""
        values = cls.gguf_values(metadata)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values.keys() & {"format", "target", "pivot"}:
            return None
        fmt = values.get("format") or "plug"
        if "target" not in values:
            raise UserError(f"{where}: no plug.target in the GGUF: pass --target CODE")
        return cls(fmt, values["target"], values.get("pivot"), bool(values.get("think")) and fmt == "plug")


def system_prompt(fmt: str, target: str | Language, pivot: str | Language | None = "en", *, think: bool = False) -> str:
    """The system prompt of one of :data:`FORMATS` (``think`` only matters for ``plug``)."""
    return PlugSpec(fmt, target, pivot, think and fmt == "plug").system_prompt()


# --------------------------------------------------------------------------------------------
# System prompts. Written for this project; {pivot} and {target} are English language names.
# A language may override the plug and mono wording (Language.plug_prompt / mono_prompt).

PLUG_PROMPT = (
    "You are a helpful assistant. When you receive an instruction written in {target}, first "
    "restate it in {pivot}, then answer it in {pivot}, and finally give the complete answer in "
    "{target}. Start the three parts with the headers \"{pivot_instruction_header}\", "
    "\"{pivot_response_header}\" and \"{target_response_header}\"."
)
PLUG_THINK_PROMPT = (
    "You are a helpful assistant. When you receive an instruction written in {target}, first "
    "think in {pivot} between <think> and </think>: restate the instruction after "
    "\"{pivot_instruction_header}\" and answer it after \"{pivot_response_header}\". After "
    "</think>, give the complete answer in {target}."
)
MONO_PROMPT = "You are a helpful assistant. Answer the user's instruction in {target}."
PIVOT_ONLY_PROMPT = (
    "You are a helpful assistant. Restate the user's instruction in {pivot}, then answer it in "
    "{pivot}, starting the two parts with \"{pivot_instruction_header}\" and "
    "\"{pivot_response_header}\"."
)


def _fill(template: str, target: Language, pivot: Language | None) -> str:
    pivot = pivot or target
    return template.format(
        target=target.name,
        pivot=pivot.name,
        target_response_header=target.response_header,
        pivot_instruction_header=pivot.instruction_header,
        pivot_response_header=pivot.response_header,
    )
