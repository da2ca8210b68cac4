"""The evaluation report: Markdown + JSON (+ a win / tie / loss chart) from judge results and
answer files. A library: ``plug-lite report`` and ``plug-lite judge`` (which reports when it is
done) both write it with :func:`write_report`.

* pairwise results: a win / tie / loss table per target language (one row per comparison), a
  stacked bar chart (matplotlib, Agg backend, PNG), the position-consistency rate (how often the
  two orders agree), and win rates by answer-length ratio, category, source dataset and status;
* single / truthful / svamp results: their rates per target language and category;
* an ensemble of judges (``judge --model A --model B``): each judge's table next to the
  ensemble's, and the judges' agreement (percent agreement, Cohen's kappa for two judges and
  Fleiss' for more) overall, per language and per category, with the judge that disagreed most;
* offline metrics (:func:`plug_lite.metrics.offline_metrics`) of every answer file named by the
  results or given as ``offline``, including the share of answers that ended by themselves
  (``finish_reason`` "stop") rather than at the token limit.

Every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import UserError, atomic_path, atomic_write_text, read_json, read_records, write_json

__all__ = ["write_report", "render_markdown", "load_results"]


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: Any, nd: int = 2) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _label(res: dict) -> str:
    f = res.get("files", {})
    names = [f[k]["name"] for k in ("a", "b") if k in f]
    return " vs ".join(names) if names else "?"


def load_results(paths: list[str]) -> list[dict]:
    out = []
    for p in paths:
        res = read_json(p)
        if not isinstance(res, dict) or "mode" not in res or "aggregate" not in res:
            raise UserError(f"{p}: not a plug-lite judge results file (no 'mode'/'aggregate')")
        if "target" not in res and "lang" in res:  # judge.json written before the language was named target
            res["target"] = res.pop("lang")
        res["_path"] = str(p)
        out.append(res)
    return out


def _pair_table(title: str, groups: dict[str, dict], key: str) -> list[str]:
    lines = [f"#### {title}", "", f"| {key} | n | A wins | ties | B wins | errors | A win rate | adjusted |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in groups.items():
        lines.append(f"| {name} | {s['n']} | {s['a_total_wins']} | {s['tie']} | {s['b_total_wins']} | {s['error']} | "
                     f"{_pct(s['a_win_rate'])} | {_pct(s['adjusted_win_rate'])} |")
    return lines + [""]


def _kappa(x: Any) -> str:
    return "undefined" if x is None else f"{x:.3f}"


def _ensemble_section(r: dict) -> list[str]:
    """An ensemble's per-judge table, agreement figures (overall, per language, per category)
    and the judge that disagreed most."""
    ens = r["ensemble"]
    ag = ens["agreement"]
    kind = {"cohen": "Cohen's", "fleiss": "Fleiss'"}[ag["kappa_kind"]]
    no_majority = r["aggregate"]["overall"].get("no_majority", 0)
    md = [f"#### {_label(r)}: {r['judge']['model']}", "",
          f"Ensemble outcome: {ens['rule']} Pairs without a majority: {no_majority}.", "",
          "| judge | n | A win | A slight | tie | B slight | B win | error | adjusted win rate [95% CI] | "
          "position consistency | differs from ensemble |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, one in ens["per_judge"].items():
        s = one["aggregate"]["overall"]
        ci = s.get("adjusted_win_rate_ci95")
        md.append(f"| {name} | {s['n']} | {s['a_win']} | {s['a_slight']} | {s['tie']} | {s['b_slight']} | {s['b_win']} | "
                  f"{s['error']} | {_pct(s['adjusted_win_rate'])}{f' [{_pct(ci[0])}, {_pct(ci[1])}]' if ci else ''} | "
                  f"{_pct(s['position_consistency'])} | {_pct(ag['disagreement_with_ensemble'].get(name))} |")
    most = ag["most_disagreeing"]
    md += ["", f"Agreement over {ag['n']} pairs no judge failed (labels: A better / tie / B better): all judges "
               f"alike on {_pct(ag['percent_agreement'])}, {kind} kappa {_kappa(ag['kappa'])}; "
               f"disagreed most with the ensemble: {', '.join(most) if most else 'none'}"
               + (" (tied)" if len(most) > 1 else "") + ".", ""]
    if len(ag["pairs"]) > 1:
        md += ["| judges | agreement | Cohen's kappa |", "|---|---|---|"]
        md += [f"| {' / '.join(p['judges'])} | {_pct(p['percent_agreement'])} | {_kappa(p['cohen_kappa'])} |"
               for p in ag["pairs"]] + [""]
    for key, title in (("by_target", "language"), ("by_category", "category")):
        md += [f"| {title} | n | agreement | {kind} kappa |", "|---|---|---|---|"]
        md += [f"| {g} | {v['n']} | {_pct(v['percent_agreement'])} | {_kappa(v['kappa'])} |"
               for g, v in ag[key].items()] + [""]
    return md


def render_markdown(results: list[dict], offline: dict[str, dict], chart: str | None) -> str:
    md = ["# plug-lite evaluation report", ""]
    pairwise = [r for r in results if r["mode"] == "pairwise"]
    if pairwise:
        md += ["## Pairwise judge (both orders)", "",
               "Win = both orders agree; slight win = one order picks the model, the other a tie; "
               "the orders disagreeing counts as a tie (inconsistent). Adjusted win rate = (A total wins + "
               "0.5 tie) / non-error pairs, with a seeded bootstrap 95% interval.", ""]
        by_lang: dict[str, list[dict]] = {}
        for r in pairwise:
            by_lang.setdefault(str(r.get("target") or "-"), []).append(r)
        for lang, rs in sorted(by_lang.items()):
            md += [f"### Language: {lang}", "",
                   "| A vs B | n | A win | A slight | tie | B slight | B win | error | inconsistent | A total wins | "
                   "adjusted win rate [95% CI] | position consistency | judge |",
                   "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for r in rs:
                s = r["aggregate"]["overall"]
                ci = s.get("adjusted_win_rate_ci95")
                ci_s = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""
                md.append(
                    f"| {_label(r)} | {s['n']} | {s['a_win']} | {s['a_slight']} | {s['tie']} | {s['b_slight']} | "
                    f"{s['b_win']} | {s['error']} | {s['inconsistent']} | {s['a_total_wins']} | "
                    f"{_pct(s['adjusted_win_rate'])}{ci_s} | {_pct(s['position_consistency'])} | "
                    f"{r['judge']['model']} (prompt {r['prompt']['hash']}) |")
            md.append("")
            for r in rs:
                if r.get("ensemble"):
                    md += _ensemble_section(r)
                agg = r["aggregate"]
                md += [f"#### {_label(r)}: breakdowns", ""]
                md += _pair_table("By answer-length ratio (len A / len B)", agg["by_length"], "length")
                md += _pair_table("By extraction status", agg["by_status"], "status")
                md += _pair_table("By category", agg["by_category"], "category")
                md += _pair_table("By source dataset", agg["by_dataset"], "dataset")
                errs = [p for p in r.get("pairs", []) if p["outcome"] == "error"]
                if errs:
                    md += ["Error rows (first 10):", ""]
                    for p in errs[:10]:
                        why = p.get("error") or p["order_ab"]["error"] or p["order_ba"]["error"]
                        md.append(f"- `{p['id']}`: {why}")
                    md.append("")
        if chart:
            md += [f"![win / tie / loss]({chart})", ""]
    for mode, title in (("single", "Single-answer grades (1-10)"), ("truthful", "Truthfulness (X-TruthfulQA)"),
                        ("svamp", "Math accuracy (X-SVAMP)")):
        rs = [r for r in results if r["mode"] == mode]
        if not rs:
            continue
        md += [f"## {title}", ""]
        for r in rs:
            agg = r["aggregate"]
            cols = [k for k in agg["overall"].keys()]
            md += [f"### {_label(r)} ({r.get('target') or '-'}; judge {r['judge']['model']})", "",
                   "| group | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            rows = [("overall", agg["overall"])] + [(f"{k[3:]}: {g}", v) for k, d in agg.items() if k.startswith("by_")
                                                   for g, v in d.items()]
            for name, v in rows:
                md.append(f"| {name} | " + " | ".join(
                    _pct(v[c]) if (c.endswith("rate") or c in ("accuracy", "truthful_x_informative",
                                                             "truthful_and_informative")) else _num(v[c])
                    for c in cols) + " |")
            md.append("")
    if offline:
        md += ["## Offline metrics of answer files", "",
               "| file | target | n | ended by itself | format ok | truncated | monolingual | not found | "
               "target-language fidelity | lines all in target | no stray Latin words | pivot lines all in pivot | "
               "answer chars (mean) | pivot tokens (mean) | pivot share of completion tokens |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in offline.items():
            sh = m["status_share"]
            md.append(f"| {name} | {m['target'] or '-'} | {m['n']} | {_pct(m.get('stopped'))} | {_pct(sh.get('ok'))} | "
                      f"{_pct(sh.get('truncated'))} | "
                      f"{_pct(sh.get('monolingual'))} | {_pct(sh.get('not_found'))} | {_pct(m['language_fidelity'])} | "
                      f"{_pct(m.get('line_clean_rate'))} | {_pct(m.get('word_clean_rate'))} | "
                      f"{_pct(m.get('pivot_line_clean_rate'))} | "
                      f"{m['answer_chars_mean']:.0f} | {m['pivot_tokens_mean']:.1f} | {_pct(m['pivot_overhead'])} |")
        md += ["Language confusion (plug_lite.confusion): the share of answers whose every line is in the target "
               "language, of non-Latin-script answers without a stray lowercase Latin word (code, names, numbers and "
               "units not counted), and of pivot sections whose every line is in the pivot language.", ""]
        examples = {name: m["confusion"]["target"]["examples"] for name, m in offline.items()
                    if m.get("confusion") and m["confusion"]["target"]["examples"]}
        for name, ex in examples.items():
            md.append(f"- {name}, first wrong-language lines / stray words: " + "; ".join(f"`{e.replace('`', chr(39))}`" for e in ex))
        md += [""] if examples else []
    if len(md) == 2:
        md.append("Nothing to report: pass judge results and/or --offline answer files.")
    return "\n".join(md) + "\n"


def _chart(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, parts = [], []
    for r in results:
        s = r["aggregate"]["overall"]
        labels.append(f"{_label(r)} ({r.get('target') or '-'})")
        parts.append([s["a_win"], s["a_slight"], s["tie"], s["b_slight"], s["b_win"], s["error"]])
    names = ["A win", "A slight win", "tie", "B slight win", "B win", "error"]
    colors = ["#1f6f3f", "#7fbf7f", "#bbbbbb", "#f2a97f", "#c0392b", "#444444"]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.5))
    left = [0.0] * len(labels)
    for j, (name, color) in enumerate(zip(names, colors)):
        vals = [p[j] / max(1, sum(p)) * 100 for p in parts]
        ax.barh(labels, vals, left=left, color=color, label=name)
        left = [a + b for a, b in zip(left, vals)]
    ax.set_xlabel("% of pairs")
    ax.set_xlim(0, 100)
    ax.legend(ncol=3, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_report(*, results: list[str] = (), offline: list[str] = (), out: str, target: str | None = None,
                 chart: bool = True) -> dict:
    """Write ``out``/report.md, report.json and (pairwise) winrate.png. Returns the JSON summary."""
    from .metrics import offline_metrics

    res = load_results(list(results))
    files = list(offline)
    for r in res:
        for f in r.get("files", {}).values():
            if f.get("path") and Path(f["path"]).exists() and f["path"] not in files:
                files.append(f["path"])
    off = {}
    for f in files:
        recs = read_records(f)
        off[Path(f).name] = offline_metrics(recs, target)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_name = None
    pairwise = [r for r in res if r["mode"] == "pairwise"]
    if chart and pairwise:
        chart_name = "winrate.png"
        _chart(pairwise, out_dir / chart_name)
    summary = {
        "results": [{"path": r["_path"], "mode": r["mode"], "label": _label(r), "target": r.get("target"),
                     "judge": r.get("judge", {}).get("model"), "prompt_hash": r.get("prompt", {}).get("hash"),
                     "aggregate": r["aggregate"]} for r in res],
        "offline": off,
        "chart": chart_name,
    }
    write_json(out_dir / "report.json", summary)
    atomic_write_text(out_dir / "report.md", render_markdown(res, off, chart_name))
    return summary


