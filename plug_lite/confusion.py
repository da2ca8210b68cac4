"""Language confusion inside an answer: is every line in the language it should be, and does a
non-Latin answer carry stray English words? A library of :mod:`plug_lite.metrics` (which reports
it as part of the offline metrics); standard library only at import time.

The answer-level fidelity of :mod:`plug_lite.metrics` labels a whole answer with one language, so
an answer that is mostly Chinese with one English line passes. The Language Confusion Benchmark
(Marchisio et al., 2024) measures such mixing per line and per word; these are plug_lite's rules
for the same two measures, deterministic and documented here:

**What is read.** Lines inside fenced code blocks (```), inline code (`...`), URLs, e-mail
addresses and file paths are removed before anything is counted, and so are mentions rather than
uses of a foreign word: a quoted span of up to 40 characters ('cat', "aeiou", “aperitivo”, 「...」),
a parenthesised Latin gloss (종(species), 餐前酒 (aperitivo)) and a name followed by ``(`` (a
function call: ``max()``).

**Units of evidence.** Each letter belongs to a script (its Unicode name: LATIN, CJK, HANGUL,
HIRAGANA, KATAKANA, CYRILLIC, ARABIC, ...). A Han, Hiragana or Katakana character is one unit (those
scripts write no spaces between words); in every other script a run of letters is one unit (a
word). Not counted at all: tokens that hold a digit ("3D", "H2O", "2024"); Latin words that start
with a capital letter or hold one later ("Python", "Einstein", "NASA", "iPhone": names, brands,
acronyms, and the first word of a sentence); Latin words of one letter (variables, "a"/"I"); and
the SI-style units in :data:`UNITS` ("kg", "km", "ml"...).

**Line level.** A line is in the expected language L, when the other language O (the answer's
pivot, or English; for the pivot section, the target) is written in another script, when L's
script units are at least as many as the units of all other scripts. When L and O share a script
(Italian against English), the line's language is py3langid's choice between L and O alone, on
lines of at least :data:`MIN_WORDS` units (so "Total: 6 × 2 = 12 °C." or "The Bianchi family" is
not asked about). A line without units (only numbers, names, code,
symbols), or a too-short line of a shared script, is not evidence and is skipped. An answer is
*line-clean* when none of its lines is in the wrong language.

**Word level** (non-Latin targets only): a *stray word* is a counted Latin unit (so: lowercase,
two letters or more, no digit, not code or a unit) in the target section. An answer is
*word-clean* when it has none.

Scripts per language: :data:`SCRIPTS` (a language not listed is taken to be written in Latin).
Korean lets Hanja (Han) count as Korean; Japanese counts Han and both kana; Chinese counts Han only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

from .languages import base_code

__all__ = ["SCRIPTS", "UNITS", "MIN_WORDS", "scripts_of", "LineVerdict", "check_text", "stray_words", "Confusion",
           "answer_confusion", "records_confusion"]

#: the scripts a language is written in (those not listed: Latin)
SCRIPTS: dict[str, frozenset[str]] = {
    "zh": frozenset({"Han"}), "ja": frozenset({"Han", "Hiragana", "Katakana"}), "ko": frozenset({"Hangul", "Han"}),
    **{c: frozenset({"Cyrillic"}) for c in ("ru", "uk", "bg", "be", "mk", "kk", "sr")},
    **{c: frozenset({"Arabic"}) for c in ("ar", "fa", "ur", "ps")},
    **{c: frozenset({"Devanagari"}) for c in ("hi", "mr", "ne", "sa")},
    "bn": frozenset({"Bengali"}), "ta": frozenset({"Tamil"}), "te": frozenset({"Telugu"}), "th": frozenset({"Thai"}),
    "el": frozenset({"Greek"}), "he": frozenset({"Hebrew"}), "ka": frozenset({"Georgian"}),
    "hy": frozenset({"Armenian"}), "am": frozenset({"Ethiopic"}), "km": frozenset({"Khmer"}),
}
_LATIN = frozenset({"Latin"})
#: scripts whose every character is a unit (no spaces between words)
_CHAR_SCRIPTS = frozenset({"Han", "Hiragana", "Katakana"})
#: lowercase Latin unit symbols that are not words of any language
UNITS = frozenset("kg mg km cm mm nm ml dl kb mb gb tb kw kwh mph kph hz khz mhz ghz db ppm rpm".split())
#: units a line of a shared script needs before py3langid is asked about it
MIN_WORDS = 3

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URLISH = re.compile(r"(?:https?://|www\.)[^\s，。、）)]+|[A-Za-z0-9_.+-]+@[A-Za-z0-9_.-]+\.[A-Za-z]+"
                     r"|(?:[A-Za-z0-9_.~-]*[/\\][A-Za-z0-9_.-]+)+|[A-Za-z0-9_-]+\.(?:py|js|json|txt|md|html|exe|com|org)\b")
_TOKEN = re.compile(r"\w+", re.UNICODE)
_QUOTED = re.compile(r"(?<![A-Za-z])[\"'“‘「『«][^\"'”’」』»\n]{1,40}[\"'”’」』»](?![A-Za-z])")
_GLOSS = re.compile(r"[(（]\s*[A-Za-z][A-Za-z \-]{0,40}[)）]")
_CALL = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z_][A-Za-z0-9_]*\(")


def _script(ch: str) -> str | None:
    """The script of a letter by its Unicode name, or None for anything that is not a letter."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    if name.startswith(("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")):
        return "Han"
    if "LATIN" in name.split(" LETTER")[0]:
        return "Latin"
    for kana in ("HIRAGANA", "KATAKANA"):
        if name.startswith(kana):
            return kana.title()
    return name.split(" ")[0].title() or None


def scripts_of(lang: str | None) -> frozenset[str]:
    """The scripts language ``lang`` is written in (:data:`SCRIPTS`; Latin when not listed)."""
    return SCRIPTS.get(base_code(lang or "en"), _LATIN)


def _readable(text: str) -> list[str]:
    """The lines of ``text`` with code blocks, inline code, URLs and paths taken out."""
    lines, in_code = [], False
    for line in str(text or "").splitlines():
        if _FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            line = _URLISH.sub(" ", _INLINE_CODE.sub(" ", line))
            lines.append(_CALL.sub(" (", _GLOSS.sub(" ", _QUOTED.sub(" ", line))))
    return lines


def _units(line: str) -> tuple[dict[str, int], list[str]]:
    """The units per script of one (readable) line, and its counted Latin words."""
    counts: dict[str, int] = {}
    latin_words: list[str] = []
    for tok in _TOKEN.findall(line):
        if any(c.isdigit() for c in tok):
            continue
        run_script, run = None, ""
        for ch in tok + " ":
            if run and unicodedata.category(ch).startswith("M"):  # a combining mark (Devanagari vowel signs)
                run += ch
                continue
            s = _script(ch)
            if s == run_script and s is not None and s not in _CHAR_SCRIPTS:
                run += ch
                continue
            if run_script is not None and run:
                _count(run_script, run, counts, latin_words)
            run_script, run = s, ch if s is not None else ""
    return counts, latin_words


def _count(script: str, run: str, counts: dict[str, int], latin_words: list[str]) -> None:
    if script == "Latin":
        if len(run) < 2 or not run.islower() or run.lower() in UNITS:
            return  # names, acronyms, sentence starts, one letter, units: not evidence
        latin_words.append(run)
    counts[script] = counts.get(script, 0) + 1


@lru_cache(maxsize=16)
def _identifier(langs: tuple[str, ...]):
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    lid = LanguageIdentifier.from_model_file(MODEL_FILE)
    lid.set_languages(list(langs))
    return lid


def _py3langid_code(lang: str) -> str:
    return base_code(lang or "en")


@dataclass(frozen=True)
class LineVerdict:
    """One line's verdict: ``in_language`` is None when the line is no evidence (skipped)."""

    line: str
    in_language: bool | None


def check_text(text: str, expected: str, other: str | None) -> list[LineVerdict]:
    """Each readable line of ``text`` judged against the expected language (see the module doc);
    ``other`` is the language it would slip into (default English)."""
    mine = scripts_of(expected)
    other = other or ("en" if _py3langid_code(expected) != "en" else None)
    shared = other is not None and bool(mine & scripts_of(other))
    out = []
    for line in _readable(text):
        if not line.strip():
            continue
        counts, latin = _units(line)
        if not counts:
            out.append(LineVerdict(line, None))
            continue
        if shared:
            if sum(counts.values()) < MIN_WORDS:
                out.append(LineVerdict(line, None))
                continue
            codes = (_py3langid_code(expected), _py3langid_code(other))
            try:
                lid = _identifier(tuple(sorted(set(codes))))
            except ValueError:  # a language py3langid does not know: no verdict
                out.append(LineVerdict(line, None))
                continue
            out.append(LineVerdict(line, lid.classify(line)[0] == codes[0]))
            continue
        ours = sum(v for s, v in counts.items() if s in mine)
        theirs = sum(v for s, v in counts.items() if s not in mine)
        out.append(LineVerdict(line, ours >= theirs))
    return out


def stray_words(text: str, expected: str) -> list[str]:
    """The stray Latin words of an answer in non-Latin-script language ``expected`` (none for a
    Latin-script language): see the module doc for what is not counted."""
    if "Latin" in scripts_of(expected):
        return []
    words: list[str] = []
    for line in _readable(text):
        words += _units(line)[1]
    return words


@dataclass
class Confusion:
    """The language-confusion figures of many answers (:func:`answer_confusion` adds one)."""

    answers: int = 0  # answers with at least one line of evidence
    line_clean: int = 0  # ... of which every such line is in the expected language
    lines: int = 0
    wrong_lines: int = 0
    word_answers: int = 0  # non-empty answers in a non-Latin target (word level)
    word_clean: int = 0
    stray: int = 0
    examples: list[str] = field(default_factory=list)  # the first wrong lines / stray words seen

    def add(self, verdicts: list[LineVerdict], words: list[str] | None) -> None:
        judged = [v for v in verdicts if v.in_language is not None]
        wrong = [v for v in judged if not v.in_language]
        if judged:
            self.answers += 1
            self.line_clean += not wrong
            self.lines += len(judged)
            self.wrong_lines += len(wrong)
        if words is not None:
            self.word_answers += 1
            self.word_clean += not words
            self.stray += len(words)
        for ex in [v.line.strip()[:80] for v in wrong] + list(words or []):
            if len(self.examples) < 5 and ex not in self.examples:
                self.examples.append(ex)

    def summary(self) -> dict:
        """``line_clean_rate`` (share of answers with evidence whose every line is in the expected
        language), ``word_clean_rate`` (share of non-Latin answers without a stray Latin word;
        None for a Latin-script language), the counts, and a few examples."""
        return {"line_clean_rate": self.line_clean / self.answers if self.answers else None,
                "word_clean_rate": self.word_clean / self.word_answers if self.word_answers else None,
                "answers": self.answers, "lines": self.lines, "wrong_lines": self.wrong_lines,
                "word_answers": self.word_answers, "stray_words": self.stray, "examples": self.examples}


def _add(record: dict, target: str | None, tgt: Confusion, piv: Confusion) -> bool:
    """Add one answer record's target section to ``tgt`` and its pivot section (pivot instruction
    and response) to ``piv``; True when it had a pivot section."""
    target = target or record.get("target")
    pivot = record.get("pivot") or None
    text = str(record.get("answer") or "")
    if target and text.strip():
        tgt.add(check_text(text, target, pivot), stray_words(text, target) if "Latin" not in scripts_of(target) else None)
    ptext = "\n".join(str(record.get(k) or "") for k in ("pivot_instruction", "pivot_response")).strip()
    if pivot and target and ptext:
        piv.add(check_text(ptext, pivot, target), None)
        return True
    return False


def answer_confusion(record: dict, target: str | None = None) -> dict:
    """The confusion of one answer record (an answers-file line or chat's ``--json`` turn), or of
    many (:func:`records_confusion`): ``target`` and ``pivot``, each a :meth:`Confusion.summary`
    (``pivot`` None when there is no pivot section)."""
    return records_confusion([record], target)


def records_confusion(records: list[dict], target: str | None = None) -> dict:
    """The confusion of an answers file: every record's target section (its ``answer``) checked
    against its target language (``target`` overrides the records'), its pivot section against
    its pivot language."""
    tgt, piv = Confusion(), Confusion()
    pivots = [_add(r, target, tgt, piv) for r in records]
    return {"target": tgt.summary(), "pivot": piv.summary() if any(pivots) else None}
