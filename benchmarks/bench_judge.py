"""Judge throughput against the scripted OpenAI-protocol server answering after a fixed latency.

For each --parallel value, a fresh cache and ``pairs`` pairs (2 calls each) are judged; the
result is the ratio of the ideal time (calls x latency / parallel) to the measured wall time
(1.0 = the thread pool keeps every slot busy, no client overhead). The first call runs alone by
design (a bad key stops after one request), so the reachable bound is also given.

    .venv/bin/python benchmarks/bench_judge.py [--pairs 40 --latency 0.2 --parallel 1 4 8]

Appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from plug_lite import judge  # noqa: E402
from plug_lite.llm import LLMSettings  # noqa: E402
from results import publish  # noqa: E402
from scripted_openai import ScriptedOpenAI  # noqa: E402


def one(pairs: int, latency: float, parallel: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, word in (("a", "first"), ("b", "second")):
            with open(t / f"{name}.jsonl", "w") as f:
                for i in range(pairs):
                    f.write(json.dumps({"id": f"q{i}", "instruction": f"question {i}", "answer": f"{word} {i}",
                                        "status": "ok", "target": "en"}) + "\n")
        with ScriptedOpenAI("Fine. [[C]]", latency=latency) as srv:
            t0 = time.perf_counter()
            res = judge.main(a=str(t / "a.jsonl"), b=str(t / "b.jsonl"), out=str(t / "out"),
                             judge=LLMSettings(base_url=srv.url, api_key="bench", max_retries=0), parallel=parallel,
                             bootstrap=0, report=False)
            wall = time.perf_counter() - t0
            calls = srv.calls
    assert res["aggregate"]["overall"]["tie"] == pairs and calls == 2 * pairs
    ideal = calls * latency / parallel
    reachable = (1 + math.ceil((calls - 1) / parallel)) * latency
    return {"parallel": parallel, "calls": calls, "wall_s": wall, "ideal_s": ideal, "ratio": ideal / wall,
            "ratio_reachable": reachable / wall, "calls_per_s": calls / wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--no-append", action="store_true")
    a = ap.parse_args()
    rows = [one(a.pairs, a.latency, p) for p in a.parallel]
    lines = [
        f"\n## bench_judge.py ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n",
        f"Judge throughput vs the scripted OpenAI server ({a.latency:g} s latency per call, {a.pairs} pairs = "
        f"{2 * a.pairs} calls, fresh cache), {platform.processor() or platform.machine()}, "
        f"{__import__('os').cpu_count()} cores. ratio = (calls x latency / parallel) / wall; "
        "'reachable' accounts for the first call running alone.\n",
        "| parallel | calls | wall s | ideal s | ratio | ratio vs reachable | calls/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['parallel']} | {r['calls']} | {r['wall_s']:.2f} | {r['ideal_s']:.2f} | {r['ratio']:.2f} | "
                     f"{r['ratio_reachable']:.2f} | {r['calls_per_s']:.1f} |")
    publish("\n".join(lines) + "\n", append=not a.no_append)


if __name__ == "__main__":
    main()
