"""Quant types of one GGUF, with and without an importance matrix: size, bits per weight, drift
per language, decode speed.

For the F16 GGUF of a PLUG run (by default the one ``make demo`` exported for its zh PLUG run) and
each quant type, three files: no importance matrix, the **run's** matrix (its training rows,
chat-rendered, pivot and target sections: :func:`plug_lite.imatrix.run_conversations`), and an
**English-only** matrix (the pivot instruction and answer of the same rows, then of the following
rows that the drift text does not use, as user/assistant chats, until it has as many tokens as the
run's). Types that need a matrix get their no-matrix file made anyway (in-process, past the
refusal export applies) to show why they are refused. Q8_0 ignores a matrix: one file.

Drift is :mod:`plug_lite.drift` against the F16 on the run's held-out rows (20 by default: the last
rows of its data file, which it did not train on), mean KL / 99th-percentile KL / top-1 agreement /
perplexity ratio, split by language (pivot = English instruction + answer, target = the answer in
the target language). Decode speed: greedy tokens/s after the prompt, one prompt, ``--decode``
tokens, once per file (noisy on a shared machine: read it as a ratio to the F16 line).

    python benchmarks/bench_quant.py            # the demo's zh run; about 40-60 minutes on 2 busy cores
    python benchmarks/bench_quant.py --run RUN_DIR --types Q4_K_M Q3_K_M --rows 10

Prints a markdown table and writes ``bench_quant.json`` in ``--out``; the table goes into
benchmarks/RESULTS.md by hand, with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DEMO_RUN = Path("/work/wt/baseline/runs/demo-zh/runs/plug-zh")
TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M")
VARIANTS = ("none", "run", "en")


def english_conversations(rec, skip: set[str], want_tokens: int, ref: Path) -> tuple[list[list[dict]], str]:
    """User/assistant chats of the pivot instruction and answer of the run's rows (trained rows
    first, then held-out rows the drift text does not use) until they reach ``want_tokens``."""
    from plug_lite import data, formats
    from plug_lite.engine import LlamaEngine

    split = data.run_rows(rec)
    rows = (split.trained + split.held_out) if split else []
    convs: list[list[dict]] = []
    tokens = 0
    eng = LlamaEngine(ref, vocab_only=True, ctx=512)
    try:
        for r in rows:
            if str(r.get("id")) in skip or tokens >= want_tokens:
                continue
            p = formats.parse(r["completion"][-1]["content"], target=rec.spec.target, pivot=rec.spec.pivot or "en")
            if not (p.pivot_instruction and p.pivot_response):
                continue
            conv = [{"role": "user", "content": p.pivot_instruction}, {"role": "assistant", "content": p.pivot_response}]
            convs.append(conv)
            tokens += len(eng.tokenize(conv, generation_prompt=False)[0])
    finally:
        eng.close()
    return convs, (f"the English sections of {len(convs)} rows of {split.source if split else '?'} as user/assistant "
                   f"chats (none of the drift rows)")


def decode_speed(path: Path, prompt: list[int], n: int, threads: int | None) -> float:
    from plug_lite.engine import LlamaEngine

    eng = LlamaEngine(path, ctx=1024, threads=threads)
    try:
        eng.greedy(prompt, 1, set())  # warm-up: prompt processing and first token
        t0 = time.perf_counter()
        one = eng.greedy(prompt, 1, set())
        t1 = time.perf_counter()
        many = eng.greedy(prompt, n, set())
        t2 = time.perf_counter()
        return (len(many) - len(one)) / max(1e-9, (t2 - t1) - (t1 - t0))
    finally:
        eng.close()


def quantize_unchecked(src: Path, dst: Path, qtype: str) -> None:
    """In-process quantization without export's refusal (to measure a type that needs a matrix)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params) != 0:
        raise RuntimeError(f"quantizing {src} to {qtype} failed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(DEMO_RUN), help="the PLUG run (its rows and export report)")
    ap.add_argument("--gguf", help="the F16 reference (default: the run's exported F16)")
    ap.add_argument("--types", nargs="+", default=list(TYPES))
    ap.add_argument("--rows", type=int, default=20, help="held-out rows scored")
    ap.add_argument("--decode", type=int, default=64, help="tokens per decode-speed measurement")
    ap.add_argument("--out", default=str(Path("/tmp") / "bench_quant"), help="files and bench_quant.json go here")
    ap.add_argument("--threads", type=int, help="llama.cpp threads everywhere (default: plug_lite's); on an "
                    "oversubscribed machine 1 thread evaluated the demo model 2-3x faster than 2")
    a = ap.parse_args()

    from plug_lite import convert, drift, imatrix, runs, toolchain

    rec = runs.RunRecord.load(a.run)
    ref = Path(a.gguf) if a.gguf else runs.read_export_report(a.run).files["F16"].path
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    t_start = time.time()
    missing = toolchain.tools_status()["missing"]
    if missing:
        raise SystemExit(f"needs llama.cpp's programs ({', '.join(missing)}): make tools")

    rows, source = drift.held_out_rows(rec, rows=a.rows)
    text = drift.prepare(rows, ref, fmt=rec.spec.format, target=rec.spec.target, pivot=rec.spec.pivot, source=source)
    print(f"drift text: {source}; {len(text.samples)} rows, {text.tokens()} scored tokens "
          f"({', '.join(f'{s} {text.tokens(s)}' for s in drift.SECTIONS)})", file=sys.stderr)

    convs, run_source = imatrix.run_conversations(rec)
    run_text, run_tokens = imatrix.calibration_text(convs, ref)
    mats = {"run": imatrix.make(ref, run_text, out / "imatrix-run.gguf", source=run_source, tokens=run_tokens,
                                rows=len(convs), threads=a.threads)}
    en_convs, en_source = english_conversations(rec, {s.id for s in text.samples}, run_tokens, ref)
    en_text, en_tokens = imatrix.calibration_text(en_convs, ref)
    mats["en"] = imatrix.make(ref, en_text, out / "imatrix-en.gguf", source=en_source, tokens=en_tokens,
                              rows=len(en_convs), threads=a.threads)

    files: dict[str, Path] = {"F16": ref}
    quant_s: dict[str, float] = {}
    for q in a.types:
        for v in VARIANTS:
            if q == "Q8_0" and v != "none":
                continue  # Q8_0 does not use a matrix
            name = f"{q}" + ("" if v == "none" else f"+{v}")
            dst = out / f"{ref.stem}-{name.replace('+', '-im-')}.gguf"
            t0 = time.time()
            if not dst.exists():
                if v == "none" and convert.needs_imatrix(q):
                    quantize_unchecked(ref, dst, q)
                else:
                    convert.quantize(ref, dst, q, imatrix=None if v == "none" else mats[v]["file"], threads=a.threads or 0)
            quant_s[name] = round(time.time() - t0, 1)
            files[name] = dst

    results = drift.compare_many(ref, {k: v for k, v in files.items() if k != "F16"}, text, threads=a.threads)
    tensors = {name: drift.tensor_summary(p, name.split("+")[0]) for name, p in files.items()}
    sizes = {name: p.stat().st_size for name, p in files.items()}
    prompt_ids = text.samples[0].tokens[: next((i for i, lab in enumerate(text.samples[0].labels) if lab), 1)]
    speed = {name: round(decode_speed(p, prompt_ids, a.decode, a.threads), 1) for name, p in files.items()}
    load1 = os.getloadavg()

    pivot, target = rec.spec.pivot or "en", rec.spec.target
    record = {"run": str(a.run), "reference": str(ref), "drift_text": source, "scored_tokens": text.tokens(),
              "scored_by_section": {s: text.tokens(s) for s in drift.SECTIONS}, "imatrix": mats,
              "results": results, "tensors": tensors, "bytes": sizes, "decode_tokens_per_s": speed,
              "quantize_s": quant_s, "load_avg_start": load0, "load_avg_end": load1,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "threads": a.threads,
              "seconds": round(time.time() - t_start)}
    (out / "bench_quant.json").write_text(json.dumps(record, indent=2, ensure_ascii=False))

    def cell(r: dict, lang: str) -> str:
        s = r["languages"].get(lang) or {}
        return f"{s['kl_mean']:.3f} / {s['kl_p99']:.2f} / {100 * s['top1']:.1f}% / {s['ppl_ratio']:.3f}" if s else "-"

    print(f"\n| file | MiB | bpw | fell back | {pivot} KL mean / p99 / top-1 / ppl ratio | {target} KL mean / p99 / top-1 / ppl ratio "
          f"| decode tok/s |")
    print("|---|---|---|---|---|---|---|")
    for name in files:
        t = tensors[name]
        r = results.get(name)
        print(f"| {name} | {sizes[name] / 2**20:.1f} | {t['bits_per_weight']:.2f} | {t['fallbacks']}/{t['quantized_tensors']} "
              f"| {cell(r, pivot) if r else 'reference'} | {cell(r, target) if r else 'reference'} | {speed[name]} |")
    print(f"\nimatrix run: {mats['run']['source']}, {mats['run']['tokens_used']} tokens, {mats['run']['seconds']} s; "
          f"en: {mats['en']['source']}, {mats['en']['tokens_used']} tokens, {mats['en']['seconds']} s")
    print(f"load average start {load0[0]:.1f}, end {load1[0]:.1f}; {record['seconds']} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
