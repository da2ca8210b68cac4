"""``make demo`` / ``plug-lite demo``: the whole PLUG loop offline, on the embedded Gemma-3-270M.

On a machine with no GPU and no hub, in about a quarter of an hour on 2 cores:

1. the embedded default model (Gemma-3-270M from PyPI, converted once to safetensors);
2. PLUG and mono training rows for one target language from the shipped sample;
3. a LoRA fine-tune of each format (preset ``cpu-demo``);
4. export of each to GGUF (Q8_0 by default: re-quantizing to Q4_K_M erases a fine-tune of this
   base, which was itself dequantized from Q4_K_M), with the parity check and the drift of each
   shipped file from the F16 by language (on ``--drift-rows`` held-out rows);
5. a one-shot chat with the PLUG model, pivot shown;
6. answers of both models to the shipped evaluation set (llama.cpp, greedy; the first 20 of 40 by
   default, so that the run stays within 15 minutes on 2 cores);
7. offline metrics (how many answers ended by themselves, format compliance, target-language
   fidelity, pivot overhead), and the untuned base model's answers to the first three
   instructions, for comparison;
8. the pairwise judge, when a judge endpoint is configured (``OPENAI_API_KEY``, or
   ``PLUG_LITE_JUDGE_BASE_URL`` for a local llama-server / vLLM / Ollama);
9. a report a person reads: the first three instructions answered by the base, the PLUG model
   (pivot apart) and the mono model side by side, the table, time per step and both loss curves
   in one plot (``report/loss.png``).

Every step reuses what an earlier run already built (a finished run folder, an exported GGUF,
answers already written), so a second ``make demo`` only redoes what is missing. A 270M model
trained for a few minutes on 48 rows shows the *mechanics*, not the paper's quality gains.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from . import drift, runs
from .cli import run as run_command
from .io import UserError, read_jsonl_resumable, write_json

__all__ = ["main", "cli"]


class _Steps:
    """Prints each step's banner and keeps how long each step took."""

    def __init__(self, total: int) -> None:
        self.total, self.t0 = total, time.time()
        self.seconds: dict[str, float] = {}
        self._open: tuple[str, float] | None = None

    def __call__(self, n: int, title: str, key: str) -> None:
        self.close()
        print(f"\n=== [{n}/{self.total}] {title}   (t = {time.time() - self.t0:.0f} s)", file=sys.stderr, flush=True)
        self._open = (key, time.time())

    def close(self) -> None:
        if self._open:
            key, start = self._open
            self.seconds[key] = round(self.seconds.get(key, 0.0) + time.time() - start, 1)
            self._open = None


def _train(data_path: Path, out: Path, fmt: str, target: str, steps: int | None, model: str, preset: str,
           train_rows: int) -> Path:
    from . import train as train_mod

    if runs.is_finished(out):
        print(f"reusing the finished run {out}", file=sys.stderr)
        return out
    # resume: an interrupted run continues from its last checkpoint (none yet: from step 0)
    cfg = train_mod.load_config(
        None, model=model, data=str(data_path), format=fmt, target=target, preset=preset,
        output_dir=str(out), resume=True, drop_long_rows=True, max_train_samples=train_rows,
        **({"max_steps": steps} if steps else {}),
    )
    return Path(train_mod.train(cfg))


def _export(run: Path, quant: str, out_dir: Path, drift_rows: int) -> runs.ExportRecord:
    from . import export

    report = runs.export_report(run, quant)
    if report is not None:
        print(f"reusing {', '.join(f.path.name for f in report.files.values())}", file=sys.stderr)
        return report
    export.main(run, out_dir=out_dir, quants=[quant], adapter=True, drift_rows=drift_rows)
    return runs.read_export_report(run)


def _generate(gguf: Path, target: str, out: Path, limit: int | None, max_new_tokens: int, fmt: str | None = None) -> dict:
    from . import generate

    return generate.main(str(gguf), eval_set=EVAL_SET, target=target, out=str(out), limit=limit,
                         max_new_tokens=max_new_tokens, fmt=fmt)


def _base_gguf(model: str, run: Path, gguf_dir: Path) -> Path:
    """A GGUF of the untuned base: the shipped Q4_K_M for the embedded Gemma, else an F16 conversion
    of the base folder (made once)."""
    from . import convert

    if model == "default":
        from . import gemma

        return Path(gemma.gguf_path())
    rec = runs.RunRecord.load(run, adapter=True)
    path = gguf_dir / runs.gguf_name(rec, "F16", kind="base")
    if not path.exists():
        convert.hf_to_gguf(runs.resolve_base(rec), path, outtype="f16")
    return path


def _judge_configured() -> bool:
    env = os.environ
    return bool(env.get("PLUG_LITE_JUDGE_BASE_URL") or env.get("OPENAI_BASE_URL")
                or env.get("PLUG_LITE_JUDGE_API_KEY") or env.get("OPENAI_API_KEY"))


def _tokens_per_s(records: list[dict]) -> float | None:
    toks = sum((r.get("tokens") or {}).get("completion") or 0 for r in records)
    secs = sum(r.get("seconds") or 0.0 for r in records)
    return toks / secs if secs else None


#: The evaluation set the demo answers (shipped with plug_lite, 40 instructions per language).
EVAL_SET = "sample"


def main(
    *,
    target: str = "zh",
    work_dir: str = "runs",
    gguf_dir: str = "gguf",
    quant: str = "Q8_0",
    steps: int | None = None,
    eval_limit: int | None = 20,
    max_new_tokens: int = 256,
    train_rows: int = 48,
    judge_model: str | None = None,
    model: str = "default",
    preset: str = "cpu-demo",
    drift_rows: int = 10,
) -> dict:
    """Run the demo for one target language; returns the summary it prints.

    Args:
        target: target language: zh, ko, it or es
        work_dir: the demo's work folder goes under it, as demo-<target>
        gguf_dir: where the GGUF files go
        quant: quant type of the exported files
        steps: training steps per model (default: the cpu-demo preset's)
        eval_limit: answer the first N evaluation instructions (default 20 of 40, to stay within
            15 minutes on 2 cores)
        max_new_tokens: tokens per answer
        train_rows: training rows per model (default 48: 60 steps of batch 2 see each 2.5 times)
        judge_model: judge model name (default: $PLUG_LITE_JUDGE_MODEL or the built-in default)
        model: base model (default: "default", the embedded Gemma-3-270M)
        preset: training preset
        drift_rows: held-out rows export's drift check scores per model (default 10, about a
            minute per model on 2 cores; export's own default is 20)
    """
    from . import chat, data, gemma, languages, metrics

    step = _Steps(9)
    t0 = step.t0
    lang = languages.get(target)
    if lang.code not in ("zh", "ko", "it", "es"):
        raise UserError(f"the shipped sample covers zh, ko, it and es; got {target!r}")
    target = lang.code
    work = runs.WorkFolder(Path(work_dir) / f"demo-{target}")
    work.root.mkdir(parents=True, exist_ok=True)
    out_gguf = Path(gguf_dir)

    if model == "default":
        step(1, "embedded default model: Gemma-3-270M (built once, then cached)", "model")
        print(f"model: {gemma.default_model_dir()}", file=sys.stderr)
    else:
        step(1, f"base model: {model}", "model")

    step(2, f"PLUG and mono training rows for {lang.name} from the shipped sample", "data")
    rows_path = {}
    for fmt in FORMATS:
        path = work.data_file(fmt, target)
        if not path.exists():
            data.main(target=target, fmt=fmt, source="sample", out=str(path))
        else:
            print(f"reusing {path}", file=sys.stderr)
        rows_path[fmt] = path

    run_dirs = {}
    for i, fmt in enumerate(FORMATS):
        step(3 + i, f"LoRA fine-tune, {fmt} format (preset {preset})", f"train_{fmt}")
        run_dirs[fmt] = _train(rows_path[fmt], work.run_dir(fmt, target), fmt, target, steps, model, preset, train_rows)

    step(5, f"export both runs to GGUF ({quant}) with the parity and stops checks", "export")
    exports, ggufs = {}, {}
    for fmt in FORMATS:
        exports[fmt] = _export(run_dirs[fmt], quant, out_gguf, drift_rows)
        ggufs[fmt] = exports[fmt].files[quant].path
        for w in (exports[fmt].verify.warnings if exports[fmt].verify else []):
            print(f"parity warning ({fmt}): {w}", file=sys.stderr)

    step(6, "one-shot chat with the PLUG model (pivot shown)", "chat")
    from .evalsets import load_eval_set

    evalset = load_eval_set(EVAL_SET, target)
    question = evalset[0]["instruction"]
    print(f"> {question}", file=sys.stderr)
    chat.main(str(ggufs["plug"]), prompt=question, show_pivot=True, max_new_tokens=max_new_tokens)

    answers = {}
    step(7, f"answers to the shipped evaluation set ({eval_limit or len(evalset)} instructions per model; "
         f"the untuned base answers the first {min(SHOW, eval_limit or SHOW)}, for comparison)", "answers")
    for fmt in FORMATS:
        answers[fmt] = work.answers_file(target, EVAL_SET, fmt)
        _generate(ggufs[fmt], target, answers[fmt], eval_limit, max_new_tokens)

    base_path = work.answers_file(target, EVAL_SET, "base")
    n_show = min(SHOW, eval_limit or SHOW)
    _generate(_base_gguf(model, run_dirs["plug"], out_gguf), target, base_path, n_show,
              min(BASE_TOKENS, max_new_tokens), fmt="mono")
    answers_base = read_jsonl_resumable(base_path)

    step(8, "offline metrics", "metrics")
    offline = {}
    for fmt, path in answers.items():
        recs = read_jsonl_resumable(path)
        m = metrics.offline_metrics(recs, target)
        m["tokens_per_s"] = _tokens_per_s(recs)
        offline[fmt] = m

    step(9, "pairwise judge (PLUG vs mono) and report", "judge_report")
    judge_result = None
    results = []
    if _judge_configured():
        from . import judge
        from .llm import LLMSettings

        judge_out = work.judge_dir(target, EVAL_SET)
        judge_result = judge.main(str(answers["plug"]), str(answers["mono"]), out=str(judge_out), target=target,
                                  judge=LLMSettings(model=judge_model))
        results = [str(p) for p in [judge_out / "judge.json"] if p.exists()]
    else:
        print("no judge configured: set OPENAI_API_KEY (OpenAI) or PLUG_LITE_JUDGE_BASE_URL="
              "http://127.0.0.1:8080/v1 (a local llama-server / vLLM / Ollama) and run make demo again "
              "to add the pairwise PLUG-vs-mono judgement", file=sys.stderr)
    from . import report as report_mod

    report_dir = work.report_dir(target)
    report_mod.main(results, offline=[str(answers["plug"]), str(answers["mono"])], out=str(report_dir), target=target)
    recs = {fmt: read_jsonl_resumable(p) for fmt, p in answers.items()}
    examples = _examples(answers_base, recs["plug"], recs["mono"], n_show)
    loss_png = _loss_plot({fmt: run_dirs[fmt] / "metrics.jsonl" for fmt in run_dirs}, report_dir / "loss.png")
    step.close()

    summary = {
        "target": target,
        "seconds": round(time.time() - t0, 1),
        "step_seconds": step.seconds,
        "stopped": {fmt: offline[fmt].get("stopped") for fmt in offline},
        "export_stops": {fmt: _each_dict(r.verify.stops) if r.verify else None for fmt, r in exports.items()},
        "examples": examples,
        "loss_plot": str(loss_png) if loss_png else None,
        "gguf": {fmt: str(p) for fmt, p in ggufs.items()},
        "runs": {fmt: str(p) for fmt, p in run_dirs.items()},
        "answers": {fmt: str(p) for fmt, p in answers.items()},
        "offline": offline,
        "parity": {fmt: _each_dict(r.verify.greedy) if r.verify else None for fmt, r in exports.items()},
        "drift": {fmt: r.verify.drift.to_dict() if r.verify and r.verify.drift else None for fmt, r in exports.items()},
        "judge": judge_result["aggregate"]["overall"] if judge_result else None,
        "report": str(report_dir / "report.md"),
    }
    write_json(work.root / "demo_summary.json", summary)
    _append_report(report_dir / "report.md", summary)
    print(_render(summary))
    return summary


#: The two models the demo trains and compares.
FORMATS = ("plug", "mono")
#: Instructions shown side by side (the first ones of the evaluation set, not picked by hand),
#: and the token limit of the untuned base's answers (a base model does not stop).
SHOW = 3
BASE_TOKENS = 128


def _each_dict(scores: dict) -> dict:
    return {name: s.to_dict() for name, s in scores.items()}


def _examples(base: list[dict], plug: list[dict], mono: list[dict], n: int) -> list[dict]:
    by_id = {"base": {r["id"]: r for r in base}, "plug": {r["id"]: r for r in plug}, "mono": {r["id"]: r for r in mono}}
    out = []
    for r in plug[:n]:
        b, m = by_id["base"].get(r["id"], {}), by_id["mono"].get(r["id"], {})
        out.append({
            "id": r["id"], "instruction": r["instruction"],
            "base": (b.get("output") or "").strip(), "base_finish": b.get("finish_reason"),
            "plug_pivot_instruction": r.get("pivot_instruction"), "plug_pivot_response": r.get("pivot_response"),
            "plug_answer": r.get("answer"), "plug_status": r.get("status"), "plug_finish": r.get("finish_reason"),
            "mono": m.get("answer"), "mono_finish": m.get("finish_reason"),
        })
    return out


def _loss_plot(metrics: dict[str, Path], out: Path) -> Path | None:
    """Both runs' training loss against the step, in one PNG (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    for fmt, path in metrics.items():
        rows = [r for r in read_jsonl_resumable(path) if r.get("loss") is not None] if path.exists() else []
        if rows:
            ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], marker=".", label=f"{fmt} (LoRA)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_title("PLUG vs mono fine-tune")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from .io import atomic_path

    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def _finish(reason: str | None) -> str:
    return {"stop": "ended by itself", "length": "cut at the token limit"}.get(reason or "", reason or "-")


def _cell(text: str | None) -> str:
    return (text or "-").strip().replace("|", "\\|").replace("\n", "<br>") or "-"


def _append_report(path: Path, s: dict) -> None:
    """Add the demo's own sections to the report.md that plug-lite report wrote."""
    from .io import atomic_write_text

    md = [path.read_text(encoding="utf-8").rstrip(), "", "## The demo, step by step", "",
          "| step | seconds |", "|---|---|"]
    md += [f"| {k} | {v:.0f} |" for k, v in s["step_seconds"].items()]
    md += [f"| **total** | **{s['seconds']:.0f}** |", ""]
    md += ["## Did the models end their answers?", "",
           "| model | answers that ended by themselves | export check (held-out prompts, merged / GGUF) |", "|---|---|---|"]
    for fmt in ("plug", "mono"):
        st = s["export_stops"].get(fmt) or {}
        chk = ", ".join(f"{k} {v['stopped']}/{v['prompts']}" for k, v in st.items()) or "-"
        md.append(f"| {fmt} | {_pct(s['stopped'].get(fmt))} | {chk} |")
    md.append("")
    md += _drift_md(s)
    if s.get("loss_plot"):
        md += ["## Training loss", "", "![training loss of both runs](loss.png)", ""]
    md += [f"## The first {len(s['examples'])} evaluation instructions, answered three ways", "",
           f"The untuned base model (its first {BASE_TOKENS} tokens), the PLUG model (its English pivot, then its "
           "answer) and the mono model, all greedy through llama.cpp.", ""]
    for i, e in enumerate(s["examples"], 1):
        md += [f"### {i}. {e['instruction']}", "",
               "| base (untuned) | PLUG: English pivot | PLUG: answer | mono: answer |", "|---|---|---|---|",
               f"| {_cell(e['base'])} | {_cell((e['plug_pivot_instruction'] or '') + chr(10) + chr(10) + (e['plug_pivot_response'] or ''))} "
               f"| {_cell(e['plug_answer'])} | {_cell(e['mono'])} |",
               f"| *{_finish(e['base_finish'])}* | | *{_finish(e['plug_finish'])}, {e['plug_status']}* | *{_finish(e['mono_finish'])}* |",
               ""]
    atomic_write_text(path, "\n".join(md) + "\n")


def _drift_md(s: dict) -> list[str]:
    """The report's section on the shipped files' drift from the F16, one table per model."""
    md = ["## How far the shipped files drift from the F16", ""]
    for fmt in ("plug", "mono"):
        d = (s.get("drift") or {}).get(fmt)
        md += [f"**{fmt}**: " + ("\n".join(drift.markdown(runs.DriftReport.from_dict(d, "demo_summary.json")))
                                 if d else "not measured (an export made before the drift check, or --drift-rows 0)"), ""]
    return md


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _indent(text: str | None, width: int = 6, limit: int = 400) -> list[str]:
    text = (text or "-").strip() or "-"
    if len(text) > limit:
        text = text[:limit] + " [...]"
    return [" " * width + line for line in text.splitlines() if line.strip()] or [" " * width + "-"]


def _render(s: dict) -> str:
    lines = ["", f"PLUG demo ({s['target']}) finished in {s['seconds']:.0f} s", ""]
    lines.append("files:")
    for fmt in ("plug", "mono"):
        lines.append(f"  {fmt:<5} GGUF    {s['gguf'][fmt]}")
        lines.append(f"  {fmt:<5} run     {s['runs'][fmt]}")
        lines.append(f"  {fmt:<5} answers {s['answers'][fmt]}")
    lines.append(f"  report     {s['report']}")
    lines.append("")
    lines.append(f"{'model':<6}{'n':>4}{'ended':>7}{'ok':>7}{'trunc':>7}{'mono':>7}{'none':>7}{'lang ok':>9}"
                 f"{'lines ok':>10}{'pivot tok':>11}{'tok/s':>8}")
    for fmt in ("plug", "mono"):
        m = s["offline"][fmt]
        sh = m.get("status_share", {})
        tps = m.get("tokens_per_s")
        pivot_share = m.get("pivot_overhead")
        lines.append(
            f"{fmt:<6}{m.get('n', 0):>4}{_pct(m.get('stopped')):>7}{_pct(sh.get('ok')):>7}{_pct(sh.get('truncated')):>7}"
            f"{_pct(sh.get('monolingual')):>7}{_pct(sh.get('not_found')):>7}{_pct(m.get('language_fidelity')):>9}"
            f"{_pct(m.get('line_clean_rate')):>10}{_pct(pivot_share):>11}{(f'{tps:.1f}' if tps else '-'):>8}"
        )
    lines.append("  (ended: answers that ended by themselves, not at the token limit; ok/trunc/mono/none: PLUG format")
    lines.append("   status; lang ok: answers detected in the target language; lines ok: answers whose every line is")
    lines.append("   in the target language (plug_lite.confusion); pivot tok: share of generated tokens")
    lines.append("   spent on the English pivot)")
    lines.append("")
    for fmt, d in (s.get("drift") or {}).items():
        if d:
            lines += [f"{fmt}: " + drift.table(runs.DriftReport.from_dict(d, "demo_summary.json")), ""]
    lines.append("time per step: " + ", ".join(f"{k} {v:.0f} s" for k, v in s.get("step_seconds", {}).items()))
    if s.get("loss_plot"):
        lines.append(f"loss curves of both runs: {s['loss_plot']}")
    for i, e in enumerate(s.get("examples", []), 1):
        lines += ["", f"[{i}] {e['instruction']}"]
        lines.append(f"  base (untuned, {_finish(e['base_finish'])}):")
        lines += _indent(e["base"])
        lines.append("  PLUG, English pivot:")
        lines += _indent(e["plug_pivot_instruction"])
        lines += _indent(e["plug_pivot_response"])
        lines.append(f"  PLUG, answer ({_finish(e['plug_finish'])}):")
        lines += _indent(e["plug_answer"])
        lines.append(f"  mono, answer ({_finish(e['mono_finish'])}):")
        lines += _indent(e["mono"])
    if s.get("judge"):
        lines.append("")
        lines.append("pairwise judge, PLUG (A) vs mono (B), both orders:")
        for k, v in s["judge"].items():
            if isinstance(v, (int, float, str)) or v is None:
                lines.append(f"  {k:<28} {v:.3f}" if isinstance(v, float) else f"  {k:<28} {v}")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    return run_command(main, argv, prog="plug-lite demo", names={"target": ("--target", "--lang")})


if __name__ == "__main__":
    raise SystemExit(cli())
