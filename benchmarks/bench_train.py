"""SFT speed of ``plug_lite.train``: tokens/s, peak memory, share of trained tokens, loss.

Runs one real training run (shipped sample rows, PLUG format) and appends a section to
benchmarks/RESULTS.md with the machine, the library versions and the date::

    python benchmarks/bench_train.py --model tiny --preset cpu-tiny --steps 8
    python benchmarks/bench_train.py --model default --preset cpu-demo            # Gemma-3-270M, 40 steps

``--model tiny`` is the random 2-layer Qwen2 of plug_lite.models (speed only: it cannot learn).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

RESULTS = HERE / "RESULTS.md"
HEADER = "# Benchmark results\n\nEach benchmark appends its own section: machine, versions, date, numbers.\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help='"tiny", "default" (Gemma-3-270M) or a model folder / hub name')
    ap.add_argument("--preset", default="cpu-tiny")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--steps", type=int, default=None, help="max steps (default: the preset's)")
    ap.add_argument("--rows", type=int, default=None, help="rows to use (default: the preset's)")
    ap.add_argument("--target", default="zh")
    ap.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None,
                    help="pack rows (default: the preset's choice)")
    ap.add_argument("--no-append", action="store_true", help="print only, do not touch RESULTS.md")
    a = ap.parse_args()

    from plug_lite import train as T
    from plug_lite.runs import RunRecord

    model = a.model
    if model == "tiny":
        from plug_lite.models import tiny_qwen2

        model = str(tiny_qwen2())
    with tempfile.TemporaryDirectory() as tmp:
        cfg = T.TrainConfig(model=model, data="sample", target=a.target, format="plug", preset=a.preset,
                            backend=a.backend, output_dir=str(Path(tmp) / "run"), max_steps=a.steps,
                            max_train_samples=a.rows, drop_long_rows=True, preview_rows=0, save_steps=10**6,
                            packing=a.packing)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        run = T.train(cfg)
        wall = time.perf_counter() - t0
        rec = RunRecord.load(run)
    m, d, cfg = rec.metrics, rec.data_summary, rec.config  # the data summary and config: dicts as train wrote them
    share = d["trained_share"]
    batching = d.get("batching") or {}
    reserved = m.peak_reserved_mib
    line = (
        f"| {rec.base_name} {rec.size_label} | {a.preset} | {rec.backend} | "
        f"{batching.get('mode') or ('packed' if batching.get('packed') else 'rows')} | {m.steps} | "
        f"{cfg['batch_size']}x{cfg['grad_accum']} | {cfg['max_length']} | "
        f"{m.tokens_per_s:.0f} | {m.trained_tokens_per_s:.0f} | {share:.0%} | {m.peak_memory_mib:.0f} | "
        f"{f'{reserved:.0f}' if reserved is not None else '-'} | "
        f"{m.first_loss:.3f} -> {m.final_loss:.3f} | {m.seconds:.0f} | {wall:.0f} |"
    )
    v = rec.versions
    section = (
        f"\n## train: SFT speed (benchmarks/bench_train.py), {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
        f"Machine: {m.device}, {os.cpu_count()} CPU cores. Versions: torch {v['torch']}, "
        f"transformers {v['transformers']}, trl {v['trl']}, "
        f"peft {v['peft']}, bitsandbytes {v['bitsandbytes']}, unsloth {v['unsloth']}, plug_lite {v['plug_lite']}.\n"
        f"Command: `python benchmarks/bench_train.py {' '.join(sys.argv[1:])}`; shipped sample rows "
        f"({a.target}, plug), {d['rows_used']} rows, {d.get('dropped_long_rows', 0)} dropped as too long.\n"
        f"Load average {load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        f"(above {os.cpu_count()} means other jobs shared the CPUs and the numbers are slower than an idle machine's).\n"
        f"Tokens/s counts every input token (prompt + completion); trained tokens/s only the completion's "
        f"(both counted by the trainer on every micro-batch). Peak MiB: GPU memory allocated by torch (CPU: the "
        f"process's peak resident memory); reserved: what torch's allocator held (GPU only).\n\n"
        "| model | preset | backend | batching | steps | batch x accum | max_length | tokens/s | trained tokens/s | "
        "trained share | peak MiB | reserved MiB | loss first -> last | train s | wall s |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" + line + "\n"
    )
    print(section)
    if not a.no_append:
        text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else HEADER
        RESULTS.write_text(text.rstrip("\n") + "\n" + section, encoding="utf-8")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
