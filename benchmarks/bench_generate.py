"""Decode speed of ``plug-lite chat`` / ``generate`` on a Qwen2.5-0.5B-shaped model.

In one run, on the same random weights and the same prompts (greedy, a fixed number of new
tokens):

1. chat's streaming path (:meth:`plug_lite.chat.ChatSession.ask`: incremental UTF-8 decoding,
   stop strings, :class:`plug_lite.formats.StreamParser` on every token) against the raw
   llama-cpp-python loop (``Llama.generate`` + ``detokenize``) on the same loaded model; runs
   alternate A/B so a busy machine hurts both alike;
2. llama.cpp Q4_K_M, Q8_0 and F16 against transformers fp32.

The model has the shape of Qwen2.5-0.5B (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocabulary 151,936), random weights (speed only). Appends a section to
benchmarks/RESULTS.md::

    python benchmarks/bench_generate.py --tokens 48     # about 5-8 minutes on 2 cores
    python benchmarks/bench_generate.py --gguf gguf/Gemma-3-270M-PLUG-zh-Q8_0.gguf --tokens 96
        # only: plug_lite's default thread count against every explicit --threads on one GGUF

Run it on an otherwise idle machine: a concurrent job moved the wrapper ratio by 10% here,
while an idle A/B of 8 runs each gave 1.00.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach benchmark appends its own section: machine, versions, date, numbers.\n"

PROMPTS = [
    "请用三句话介绍一下长城。",
    "Spiega in breve perché il cielo è blu.",
    "한국의 전통 음식 세 가지를 설명해 주세요.",
    "¿Cuáles son las ventajas de aprender un segundo idioma?",
]
SHAPE = dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864)


def raw_loop(llm, tokens: list[int], n: int) -> tuple[int, float]:
    """The plain llama-cpp-python loop: (tokens generated, decode seconds after the first)."""
    import llama_cpp

    vocab = llm._model.vocab
    out = bytearray()
    count, t_first = 0, None
    for tok in llm.generate(tokens, temp=0.0, top_k=1):
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        out += llm.detokenize([tok])
        count += 1
        if t_first is None:
            t_first = time.perf_counter()
        if count >= n:
            break
    return count, time.perf_counter() - t_first


def _when_and_load() -> tuple[str, float]:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), load


def _publish(text: str, append: bool) -> None:
    print(text)
    if append:
        if not RESULTS.exists():
            RESULTS.write_text(HEADER + "\n", encoding="utf-8")
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write("\n" + text)


def chat_path(session, prompt: str) -> tuple[int, float]:
    for _ in session.ask(prompt):
        pass
    st = session.last.stats
    return st.completion_tokens, (st.completion_tokens - 1) / st.decode_tokens_per_s


def thread_sweep(gguf: Path, prompts: list[str], tokens: int, repeats: int = 2) -> list[tuple[str, float]]:
    """Decode tokens/s of chat's streaming path on ``gguf`` with plug_lite's default threads and with
    each explicit count from 1 to the usable CPUs; runs interleaved so load drift hurts all alike."""
    from plug_lite.chat import ChatSession
    from plug_lite.engine import LlamaEngine, default_threads, usable_cpus

    settings: list[int | None] = [None, *range(1, len(usable_cpus()) + 1)]
    engines = {t: LlamaEngine(gguf, threads=t) for t in settings}
    rates: dict[int | None, list[float]] = {t: [] for t in settings}
    try:
        for _ in range(repeats):
            for p in prompts:
                for t in settings:
                    s = ChatSession(engine=engines[t], max_new_tokens=tokens)
                    n, secs = chat_path(s, p)
                    if n > 1:
                        rates[t].append((n - 1) / secs)
    finally:
        for e in engines.values():
            e.close()
    d, b = default_threads()
    return [(f"default (decode {d}, prompt {b})" if t is None else f"--threads {t}", statistics.median(r))
            for t, r in rates.items() if r]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", help="only compare thread counts on this GGUF (e.g. the demo's Q8_0)")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per prompt")
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args()

    if a.gguf:
        return threads_main(Path(a.gguf), a)

    import llama_cpp
    import torch
    import transformers

    from plug_lite import convert
    from plug_lite.chat import ChatSession
    from plug_lite.engine import LlamaEngine
    from plug_lite.models import tiny_qwen2

    prompts = PROMPTS[: a.prompts]
    t0 = time.time()
    model_dir = tiny_qwen2(**SHAPE)
    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    f16 = convert.hf_to_gguf(model_dir, work / "m-f16.gguf", outtype="f16")
    ggufs = {"F16": f16}
    for q in ("Q8_0", "Q4_K_M"):
        ggufs[q] = convert.quantize(f16, work / f"m-{q.lower()}.gguf", q)
    prep_s = time.time() - t0
    print(f"prepared in {prep_s:.0f}s", file=sys.stderr)

    # 1. Wrapper overhead on Q8_0: the same Llama object serves both paths.
    engine = LlamaEngine(ggufs["Q8_0"], threads=a.threads)
    session = ChatSession(engine=engine, fmt="plug", target="zh", max_new_tokens=a.tokens)
    chat_rates, raw_rates = [], []
    chat_path(session, prompts[0])  # warm-up
    for p in prompts:
        session.reset()
        toks, _ = engine.tokenize(session.messages(p))
        for order in (0, 1):
            for which in ((0, 1) if order == 0 else (1, 0)):
                if which == 0:
                    n, s = chat_path(session, p)
                    chat_rates.append((n - 1) / s)
                else:
                    n, s = raw_loop(engine.llm, toks, a.tokens)
                    raw_rates.append((n - 1) / s)
                session.reset()
    engine.close()
    chat_tps, raw_tps = statistics.median(chat_rates), statistics.median(raw_rates)

    # 2. Engines: llama.cpp quants (raw loop) and transformers fp32, same prompts and token count.
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from plug_lite import spec

    system = spec.system_prompt("plug", "zh", "en")
    engines: dict[str, float] = {}
    sizes: dict[str, float] = {}
    for name, path in ggufs.items():
        eng = LlamaEngine(path, threads=a.threads)
        rates = []
        raw_loop(eng.llm, eng.tokenize([{"role": "user", "content": "hi"}])[0], 4)  # warm-up
        for p in prompts:
            toks, _ = eng.tokenize([{"role": "system", "content": system}, {"role": "user", "content": p}])
            n, s = raw_loop(eng.llm, toks, a.tokens)
            rates.append((n - 1) / s)
        eng.close()
        engines[f"llama.cpp {name}"] = statistics.median(rates)
        sizes[f"llama.cpp {name}"] = path.stat().st_size / 2**20
    if a.threads:
        torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rates = []
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": p}],
                                      add_generation_prompt=True, return_tensors="pt", return_dict=False)
        times = {}
        for n in (1, a.tokens):
            t = time.perf_counter()
            with torch.no_grad():
                model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                               do_sample=False, pad_token_id=tok.pad_token_id)
            times[n] = time.perf_counter() - t
        rates.append((a.tokens - 1) / (times[a.tokens] - times[1]))
    engines["transformers fp32"] = statistics.median(rates)
    sizes["transformers fp32"] = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20
    total_s = time.time() - t0

    hf = engines["transformers fp32"]
    stamp, load = _when_and_load()
    lines = [
        f"## generate/chat decode speed (benchmarks/bench_generate.py), {stamp}",
        "",
        f"Machine: CPU only, {os.cpu_count()} cores ({platform.machine()}); load average {load:.1f} at the end "
        "(other jobs shared the CPUs). Versions: llama-cpp-python "
        f"{llama_cpp.__version__}, torch {torch.__version__}, transformers {transformers.__version__}.",
        f"Command: `python benchmarks/bench_generate.py --tokens {a.tokens} --prompts {a.prompts}`; Qwen2.5-0.5B shape "
        "(hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocab 151,936), random weights, "
        f"greedy, {a.tokens} new tokens per prompt, {len(prompts)} prompts (zh/it/ko/es) with the PLUG system prompt; "
        "decode tokens/s after the first token, median over prompts.",
        "",
        "| path (llama.cpp Q8_0, same loaded model) | decode tokens/s | ratio to raw |",
        "|---|---|---|",
        f"| raw llama-cpp-python loop (generate + detokenize) | {raw_tps:.1f} | 1.00 |",
        f"| plug-lite chat streaming (ChatSession.ask) | {chat_tps:.1f} | {chat_tps / raw_tps:.3f} |",
        "",
        f"Wrapper cost: {100 * (1 - chat_tps / raw_tps):+.1f}% (goal: under 3%; runs alternated A/B, "
        f"{len(chat_rates)} each).",
        "",
        "| engine | file MiB | decode tokens/s | ratio to transformers fp32 |",
        "|---|---|---|---|",
    ]
    for name, tps in engines.items():
        lines.append(f"| {name} | {sizes[name]:.0f} | {tps:.1f} | {tps / hf:.2f} |")
    lines += ["", f"Preparation (random model, GGUF F16, two quantizations) {prep_s:.0f} s; whole run {total_s:.0f} s.", ""]
    shutil.rmtree(work, ignore_errors=True)
    _publish("\n".join(lines), not a.no_append)
    return 0


def threads_main(gguf: Path, a) -> int:
    import llama_cpp

    prompts = PROMPTS[: a.prompts]
    rows = thread_sweep(gguf, prompts, a.tokens)
    best_name, best = max(rows, key=lambda r: r[1])
    dflt = rows[0][1]
    stamp, load = _when_and_load()
    lines = [
        f"## chat decode speed by thread count (benchmarks/bench_generate.py --gguf), {stamp}",
        "",
        f"Machine: CPU only, {os.cpu_count()} CPUs ({platform.machine()}), load average {load:.1f} at the end; "
        f"llama-cpp-python {llama_cpp.__version__}. File: `{gguf.name}` ({gguf.stat().st_size / 2**20:.0f} MiB).",
        f"Command: `python benchmarks/bench_generate.py --gguf {gguf.name} --tokens {a.tokens} --prompts {a.prompts}`; "
        "chat's streaming path (ChatSession.ask), greedy, decode tokens/s after the first token, median over "
        f"{len(prompts)} prompts x 2 runs, the settings interleaved.",
        "",
        "| threads | decode tokens/s | ratio to the best |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {tps:.1f} | {tps / best:.3f} |" for name, tps in rows]
    lines += ["", f"Default / best ({best_name}): **{dflt / best:.3f}**.", ""]
    _publish("\n".join(lines), not a.no_append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
