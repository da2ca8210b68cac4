"""The language registry: names and PLUG section headers.

This module and ``formats.py`` are the only places that know the PLUG headers; what a PLUG model
is (format, target, pivot, think) and its system prompts are :mod:`plug_lite.spec`'s. Standard
library only.

The response headers of the paper's five languages keep the reference wording, because models
trained on the paper's data emit exactly these strings::

    English response:   中文回复：   한국어 응답:   Risposta in italiano:   Respuesta en español:

Users add languages with :func:`register` or a JSON file (see :func:`load_file`); the file named
by the environment variable ``PLUG_LITE_LANGUAGES`` is loaded on import.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

__all__ = [
    "Language",
    "LanguageError",
    "get",
    "base_code",
    "register",
    "codes",
    "load_file",
]


class LanguageError(ValueError):
    """An unknown or malformed language; the message is one line meant for the user."""


@dataclass(frozen=True)
class Language:
    """One registered language."""

    code: str  # short code used on the command line ("zh", "ko", "pt-br")
    name: str  # English name ("Chinese")
    native: str  # native name ("中文")
    response_header: str  # opens an answer written in this language ("中文回复：")
    instruction_header: str  # opens an instruction restated in this language ("中文指令：")
    # Optional wording overrides for the system prompts; ``{pivot}`` / ``{target}`` are English
    # language names. Empty means plug_lite.spec's defaults.
    plug_prompt: str = field(default="", compare=False)
    mono_prompt: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for f in ("code", "name", "native", "response_header", "instruction_header"):
            value = getattr(self, f)
            if not isinstance(value, str) or not value.strip():
                raise LanguageError(f"language {self.code!r}: field {f!r} must be a non-empty string")
            if "\n" in value:
                raise LanguageError(f"language {self.code!r}: field {f!r} must be one line")
        for f in ("response_header", "instruction_header"):
            if not getattr(self, f).rstrip().endswith((":", "：")):
                raise LanguageError(
                    f"language {self.code!r}: field {f!r} must end with ':' or '：' "
                    f"(got {getattr(self, f)!r})"
                )
        if self.response_header == self.instruction_header:
            raise LanguageError(f"language {self.code!r}: the two headers must differ")

    def to_dict(self) -> dict:
        return asdict(self)


_REGISTRY: dict[str, Language] = {}


def register(lang: Language, *, replace: bool = False) -> Language:
    """Add ``lang`` to the registry (``replace=True`` to redefine an existing code)."""
    if not isinstance(lang, Language):
        raise TypeError("register() takes a Language")
    code = lang.code.strip().lower()
    if code != lang.code:
        raise LanguageError(f"language code {lang.code!r} must be lower-case with no spaces")
    if code in _REGISTRY and not replace and _REGISTRY[code] != lang:
        raise LanguageError(f"language {code!r} is already registered (pass replace=True to redefine it)")
    for other in _REGISTRY.values():
        if other.code == code:
            continue
        clash = {other.response_header, other.instruction_header} & {
            lang.response_header,
            lang.instruction_header,
        }
        if clash:
            raise LanguageError(
                f"language {code!r}: header {sorted(clash)[0]!r} is already used by {other.code!r}"
            )
    _REGISTRY[code] = lang
    return lang


def get(code: str | Language) -> Language:
    """The registered language for ``code`` (case-insensitive); a one-line error when unknown."""
    if isinstance(code, Language):
        return code
    key = str(code).strip().lower()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise LanguageError(
            f"unknown language code {code!r}; known: {', '.join(codes())} "
            "(register more with plug_lite.languages.register or PLUG_LITE_LANGUAGES=file.json)"
        ) from None


def base_code(code: str) -> str:
    """The primary subtag of a language code, lower case: ``"pt-BR"`` and ``"pt_br"`` -> ``"pt"``."""
    return code.lower().replace("_", "-").split("-")[0]


def codes() -> list[str]:
    """Registered language codes, in registration order."""
    return list(_REGISTRY)


def load_file(path: str | os.PathLike, *, replace: bool = False) -> list[Language]:
    """Register the languages of a JSON file: a list of objects with the :class:`Language` fields."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LanguageError(f"{p}: languages file not found") from None
    except IsADirectoryError:
        raise LanguageError(f"{p}: is a folder, expected a JSON file") from None
    except UnicodeDecodeError as e:
        raise LanguageError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise LanguageError(f"{p}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')} at line "
                            f"{getattr(e, 'lineno', 1)})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise LanguageError(f"{p}: expected a list of language objects")
    names = {f.name for f in fields(Language)}
    out = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise LanguageError(f"{p}: record {i}: expected an object")
        unknown = set(rec) - names
        if unknown:
            raise LanguageError(f"{p}: record {i}: unknown field {sorted(unknown)[0]!r}")
        missing = [n for n in ("code", "name", "native", "response_header", "instruction_header") if n not in rec]
        if missing:
            raise LanguageError(f"{p}: record {i}: missing field {missing[0]!r}")
        try:
            out.append(register(Language(**rec), replace=replace))
        except LanguageError as e:
            raise LanguageError(f"{p}: record {i}: {e}") from None
    return out


# --------------------------------------------------------------------------------------------
# Built-in languages. The first five are the paper's; their response headers are the reference
# wording. The rest use headers written for this project in the same pattern.

_BUILTIN = [
    Language("en", "English", "English", "English response:", "English instruction:"),
    Language("zh", "Chinese", "中文", "中文回复：", "中文指令："),
    Language("ko", "Korean", "한국어", "한국어 응답:", "한국어 지시:"),
    Language("it", "Italian", "Italiano", "Risposta in italiano:", "Istruzione in italiano:"),
    Language("es", "Spanish", "Español", "Respuesta en español:", "Instrucción en español:"),
    Language("de", "German", "Deutsch", "Antwort auf Deutsch:", "Anweisung auf Deutsch:"),
    Language("fr", "French", "Français", "Réponse en français:", "Consigne en français:"),
    Language("pt", "Portuguese", "Português", "Resposta em português:", "Instrução em português:"),
    Language("ja", "Japanese", "日本語", "日本語の回答：", "日本語の指示："),
    Language("ru", "Russian", "Русский", "Ответ на русском:", "Инструкция на русском:"),
    Language("ar", "Arabic", "العربية", "الإجابة بالعربية:", "التعليمات بالعربية:"),
    Language("hi", "Hindi", "हिन्दी", "हिंदी में उत्तर:", "हिंदी में निर्देश:"),
    Language("vi", "Vietnamese", "Tiếng Việt", "Trả lời bằng tiếng Việt:", "Yêu cầu bằng tiếng Việt:"),
    Language("th", "Thai", "ภาษาไทย", "คำตอบภาษาไทย:", "คำสั่งภาษาไทย:"),
    Language("id", "Indonesian", "Bahasa Indonesia", "Jawaban dalam bahasa Indonesia:", "Instruksi dalam bahasa Indonesia:"),
    Language("sw", "Swahili", "Kiswahili", "Jibu kwa Kiswahili:", "Maagizo kwa Kiswahili:"),
    Language("tr", "Turkish", "Türkçe", "Türkçe yanıt:", "Türkçe talimat:"),
    Language("nl", "Dutch", "Nederlands", "Antwoord in het Nederlands:", "Instructie in het Nederlands:"),
]
for _lang in _BUILTIN:
    register(_lang)
del _lang

# Names used by the evaluation sets (X-AlpacaEval splits are named in English).
SPLIT_NAMES = {lang.name.lower(): lang.code for lang in _BUILTIN}

if os.environ.get("PLUG_LITE_LANGUAGES"):
    load_file(os.environ["PLUG_LITE_LANGUAGES"], replace=True)
