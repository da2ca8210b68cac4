"""Calibrate the language-confusion rules (plug_lite/confusion.py) on real text that is known to be
in one language: the shipped sample (plug_lite/resources/sample/: training responses and
instructions, evaluation instructions) and the public multilingual files in ../shared/data
(LLMZoo and Vicuna-80 questions, MSVAMP and MGSM problems, TruthfulQA-multi Spanish answers; read
only, never needed by the tests). Clean text should score near 100% line-clean and word-clean;
every wrong line or stray word printed here is a false alarm of the rules.

Each text is checked as a target section in its language against English (the pivot), and the
English files as a pivot section against each target (``en vs zh`` ...).

    python benchmarks/bench_confusion.py [--shared ../shared/data] [--no-append]

(``--shared``: the shared data folder; by default ``../shared/data`` from the checkout's parent.)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results import publish  # noqa: E402
from plug_lite.confusion import Confusion, check_text, scripts_of, stray_words  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "plug_lite" / "resources" / "sample"
LANGS = ("zh", "ko", "it", "es")
NAMES = {"zh": "Chinese", "ko": "Korean", "it": "Italian", "es": "Spanish", "en": "English"}


def _jsonl(path: Path) -> list[dict]:
    """JSON lines, or a JSON list (told from the first character)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def sources(shared: Path) -> list[tuple[str, str, list[str]]]:
    """(label, language, texts) of every corpus."""
    out = []
    for lang in (*LANGS, "en"):
        train = _jsonl(SAMPLE / f"train.{lang}.jsonl")
        out.append((f"sample train.{lang} responses", lang, [r["response"] for r in train]))
        ev = json.loads((SAMPLE / f"eval.{lang}.json").read_text(encoding="utf-8"))
        out.append((f"sample train+eval.{lang} instructions", lang, [r["instruction"] for r in train + ev]))
    if not shared.is_dir():
        return out
    mo = shared / "multilingual_open_ended"
    for lang in (*LANGS, "en"):
        out.append((f"llmzoo {lang}100 queries", lang, [r["query"] for r in _jsonl(mo / "llmzoo" / f"{lang}100.jsonl")]))
        out.append((f"vicuna80 {NAMES[lang]} questions", lang,
                    [r["text"] for r in _jsonl(mo / "vicuna80" / f"questions_{NAMES[lang]}.jsonl")]))
    for lang in ("zh", "es"):
        out.append((f"msvamp {NAMES[lang]} (m_query)", lang,
                    [r["m_query"] for r in _jsonl(shared / "math" / f"msvamp_{NAMES[lang]}.json")]))
        with open(shared / "math" / f"mgsm_{lang}.tsv", encoding="utf-8") as f:
            out.append((f"mgsm_{lang} questions", lang, [row[0] for row in csv.reader(f, delimiter="\t")]))
    tq = _jsonl(shared / "truthfulqa" / "truthfulqa_multi_es.json")
    out.append(("truthfulqa_multi_es questions + best answers", "es",
                [r["question"] for r in tq] + [r["best_answer"] for r in tq]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"), help="the shared data folder")
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    rows = []
    t0 = time.perf_counter()
    for label, lang, texts in sources(Path(args.shared)):
        checks = [(lang, "en")] if lang != "en" else [("en", other) for other in LANGS]
        for expected, other in checks:
            c = Confusion()
            for t in texts:
                c.add(check_text(t, expected, other),
                      stray_words(t, expected) if "Latin" not in scripts_of(expected) else None)
            s = c.summary()
            rows.append((label if lang != "en" else f"{label} (pivot, vs {other})", len(texts), s))
    lines = [f"## language confusion on clean text (benchmarks/bench_confusion.py), "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"`python benchmarks/bench_confusion.py --shared {args.shared}` (rules: plug_lite/confusion.py). Every "
             "text below was written in one language, so anything short of 100% is a false alarm, unless the text "
             "itself quotes another language (the examples are the first ones; judged: texts with a line of "
             "evidence).", "",
             "| text | texts | judged | line-clean | lines (wrong) | word-clean | stray words | first false alarms |",
             "|---|---|---|---|---|---|---|---|"]
    for label, n, s in rows:
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        ex = "; ".join(e.replace("|", "/").replace("`", "'") for e in s["examples"][:3]) or "-"
        lines.append(f"| {label} | {n} | {s['answers']} | {pct(s['line_clean_rate'])} | {s['lines']} ({s['wrong_lines']}) "
                     f"| {pct(s['word_clean_rate'])} | {s['stray_words']} | {ex} |")
    lines += ["", f"({time.perf_counter() - t0:.1f} s)", ""]
    publish("\n".join(lines) + "\n", append=not args.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
