"""Offline metrics of an answer file (no judge, no network) and the rule-based number extractor
used for X-SVAMP.

``offline_metrics(records, target)`` on the records written by ``plug-lite generate``:

* format compliance: the share of each extraction status (``ok``, ``truncated``, ``monolingual``,
  ``not_found``; see :data:`plug_lite.formats.STATUSES`);
* target-language fidelity: the share of non-empty answers that py3langid (it ships its model)
  identifies as the target language;
* answer length in characters (mean, median) and in target tokens when recorded;
* the pivot's token overhead: pivot tokens as a share of all completion tokens, and per answer;
* language confusion inside answers (:mod:`plug_lite.confusion`): ``line_clean_rate`` (answers
  whose every line is in the target language), ``word_clean_rate`` (non-Latin targets: answers
  without a stray Latin word) and ``pivot_line_clean_rate`` (pivot sections whose every line is in
  the pivot language), with the counts and examples under ``confusion``.

Standard library only at import time; py3langid is imported by :func:`detect_language`.
"""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections import Counter
from typing import Iterable

from .formats import STATUSES, upgrade_answer
from .languages import base_code

__all__ = ["offline_metrics", "detect_language", "extract_number", "numbers_equal", "svamp_accuracy"]

def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, score) by py3langid's bundled model."""
    import py3langid

    code, score = py3langid.classify(text)
    return code, float(score)


# py3langid names some varieties separately; they count as the registry's language.
_ALIASES = {"wuu": "zh", "yue": "zh", "lzh": "zh", "cmn": "zh", "nb": "no", "nn": "no"}


def _base(code: str) -> str:
    base = base_code(code)
    return _ALIASES.get(base, base)


def offline_metrics(records: Iterable[dict], target: str | None = None) -> dict:
    """Metrics of one answer file. ``target`` (the target language) defaults to the records' own."""
    records = [upgrade_answer(r) for r in records]
    n = len(records)
    if target is None:
        langs = Counter(r.get("target") for r in records if r.get("target"))
        target = langs.most_common(1)[0][0] if langs else None
    statuses = Counter(str(r.get("status") or "unknown") for r in records)
    status_share = {s: (statuses.get(s, 0) / n if n else 0.0) for s in STATUSES}
    for s in statuses:
        if s not in status_share:
            status_share[s] = statuses[s] / n
    answers = [str(r.get("answer") or "") for r in records]
    nonempty = [a for a in answers if a.strip()]
    fidelity = None
    detected: Counter = Counter()
    if target and nonempty:
        hits = 0
        for a in nonempty:
            code, _ = detect_language(a)
            detected[code] += 1
            hits += _base(code) == _base(target)
        fidelity = hits / len(nonempty)
    lengths = [len(a) for a in answers]
    tok = [r.get("tokens") or {} for r in records]
    pivot_tokens = [int(t.get("pivot") or 0) for t in tok]
    target_tokens = [int(t.get("target") or 0) for t in tok]
    completion = [int(t.get("completion") or 0) for t in tok]
    total_completion = sum(completion)
    from .confusion import records_confusion

    confusion = records_confusion(records, target)
    # why each answer ended (generate records finish_reason): "stop" = the model ended its turn
    reasons = Counter(str(r.get("finish_reason")) for r in records if r.get("finish_reason"))
    return {
        "n": n,
        "target": target,
        "status_counts": dict(statuses),
        "status_share": status_share,
        "format_compliance": status_share.get("ok", 0.0),
        "language_fidelity": fidelity,
        "languages_detected": dict(detected.most_common(5)),
        "empty_answers": n - len(nonempty),
        "answer_chars_mean": statistics.fmean(lengths) if lengths else 0.0,
        "answer_chars_median": statistics.median(lengths) if lengths else 0.0,
        "target_tokens_mean": statistics.fmean(target_tokens) if any(target_tokens) else None,
        "pivot_tokens_mean": statistics.fmean(pivot_tokens) if pivot_tokens else 0.0,
        "completion_tokens_mean": statistics.fmean(completion) if completion else 0.0,
        "pivot_overhead": (sum(pivot_tokens) / total_completion) if total_completion else None,
        "seconds_mean": statistics.fmean([float(r.get("seconds") or 0) for r in records]) if records else 0.0,
        "finish_reasons": dict(reasons),
        "stopped": (reasons.get("stop", 0) / sum(reasons.values())) if reasons else None,
        "line_clean_rate": confusion["target"]["line_clean_rate"],
        "word_clean_rate": confusion["target"]["word_clean_rate"],
        "pivot_line_clean_rate": confusion["pivot"]["line_clean_rate"] if confusion["pivot"] else None,
        "confusion": confusion,
    }


# --- X-SVAMP: the final number of an answer ------------------------------------------------------

# "Answer: N" and its translations; the number after the LAST such marker wins over the last
# number of the text.
_MARKERS = re.compile(
    r"(?:final\s+answer|answer|the\s+answer\s+is|答案|答|结果|정답|답|risposta(?:\s+finale)?|"
    r"la\s+risposta\s+è|respuesta(?:\s+final)?|la\s+respuesta\s+es|resultado)\s*(?:is|是|为|為|은|는|:|：|=|è|es)?\s*[:：]?",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.,])[-−]?\d+(?:[.,]\d+)*")
_DOT_THOUSANDS = {"it", "es", "de", "pt", "nl", "id", "tr", "ru", "vi"}


def _parse_number(token: str, lang: str | None) -> float | None:
    s = token.replace("−", "-")
    neg = s.startswith("-")
    s = s.lstrip("-")
    if "," in s and "." in s:
        dec = "," if s.rfind(",") > s.rfind(".") else "."
        thou = "." if dec == "," else ","
        s = s.replace(thou, "").replace(dec, ".")
    elif "," in s:
        parts = s.split(",")
        if len(parts) > 2 or all(len(p) == 3 for p in parts[1:]) and len(parts[0]) <= 3:
            s = "".join(parts)  # 1,234 / 1,234,567: thousands
        else:
            s = ".".join(parts)  # 3,5: decimal comma
    elif "." in s:
        parts = s.split(".")
        if len(parts) > 2 and all(len(p) == 3 for p in parts[1:]):
            s = "".join(parts)  # 1.234.567
        elif len(parts) == 2 and len(parts[1]) == 3 and _base(lang or "") in _DOT_THOUSANDS:
            s = "".join(parts)  # 1.000 in Italian / Spanish
    try:
        v = float(s)
    except ValueError:
        return None
    return -v if neg else v


def extract_number(text: str, lang: str | None = None) -> float | None:
    """The final numeric answer of ``text``: the first number after the last "Answer:"-like
    marker (en/zh/ko/it/es), else the last number. Full-width digits, thousands separators and
    decimal commas are understood. ``None`` when there is no number."""
    if not text:
        return None
    t = unicodedata.normalize("NFKC", text)
    t = re.sub(r"(?<=\d)\.(?=\s|$)", " ", t)  # a sentence's full stop after a number
    markers = list(_MARKERS.finditer(t))
    if markers:
        tail = t[markers[-1].end():]
        m = _NUMBER.search(tail)
        if m:
            return _parse_number(m.group(0), lang)
    found = _NUMBER.findall(t)
    for tok in reversed(found):
        v = _parse_number(tok, lang)
        if v is not None:
            return v
    return None


def numbers_equal(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return False
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def svamp_accuracy(preds: list[float | None], golds: list[float]) -> float:
    return sum(numbers_equal(p, g) for p, g in zip(preds, golds)) / len(golds) if golds else 0.0
