"""The pairwise judge of one X-AlpacaEval language (805 instructions x 2 orders = 1,610 calls)
against the scripted OpenAI-protocol server: live (``--parallel 8``) vs the Batch API
(``--batch --batch-wait``: upload, create, polls, downloads) vs a request file and a result file
(``--write-requests`` then ``--read-results``, no HTTP at all).

Measured per mode: the client's wall time and the HTTP requests it made (by route, counted by the
server). The scripted server answers a live call after ``--latency`` seconds and runs
``--lines-per-poll`` lines of a batch per status poll (a real Batch API takes minutes to 24 hours;
what this measures is plug_lite's own side: requests, files, ingestion). The three runs must give
the same verdicts.

    .venv/bin/python benchmarks/bench_batch.py [--n 805 --latency 0.2 --parallel 8 --poll 0.05]

Appends a section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
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
from plug_lite.llm_batch import BatchOptions  # noqa: E402
from results import publish  # noqa: E402
from scripted_openai import ScriptedOpenAI, completion, user_text  # noqa: E402


def verdict(body: dict) -> str:
    """A judge whose verdict depends on the pair (so the three runs can be compared)."""
    u = user_text(body)
    a = u.split("##### ANSWER OF ASSISTANT A #####", 1)[1]
    return "Compared. " + ("[[A]]" if a.lstrip().startswith("better") else "[[B]]" if "worse" in a[:40] else "[[C]]")


def answers(folder: Path, n: int) -> tuple[Path, Path]:
    paths = []
    for name in ("plug", "mono"):
        p = folder / f"{name}.jsonl"
        with open(p, "w", encoding="utf-8") as f:
            for i in range(n):
                text = ("better" if (i % 3 == 0) == (name == "plug") else "worse") + f" answer {i} " + "words " * 60
                f.write(json.dumps({"id": f"x{i}", "instruction": f"Instruction {i}: " + "explain " * 20,
                                    "answer": text, "status": "ok", "target": "zh", "generator": name}) + "\n")
        paths.append(p)
    return paths[0], paths[1]


def run(mode: str, a: Path, b: Path, out: Path, args) -> dict:
    common = dict(a=str(a), b=str(b), out=str(out), bootstrap=0, report=False)
    offline_judge = LLMSettings(model="judge-x", max_retries=0)
    with ScriptedOpenAI(verdict, latency=args.latency, batch_lines_per_poll=args.lines_per_poll) as srv:
        served = LLMSettings(model="judge-x", max_retries=0, base_url=srv.url, api_key="bench")
        t0 = time.perf_counter()
        if mode == "live":
            res = judge.main(**common, judge=served, parallel=args.parallel)
        elif mode == "batch":
            res = judge.main(**common, judge=served,
                             batch_opts=BatchOptions(batch=True, batch_wait=True, batch_poll=args.poll))
        else:  # a request file, answered offline (what vllm run-batch would do), and a result file
            req, got = out.parent / f"{out.name}-requests.jsonl", out.parent / f"{out.name}-results.jsonl"
            judge.main(**common, judge=offline_judge, batch_opts=BatchOptions(write_requests=str(req)))
            t1 = time.perf_counter()
            with open(req, encoding="utf-8") as fi, open(got, "w", encoding="utf-8") as fo:
                for n, line in enumerate(fi):
                    x = json.loads(line)
                    body = completion(x["body"], verdict(x["body"]), str(n))
                    fo.write(json.dumps({"id": f"r{n}", "custom_id": x["custom_id"], "error": None, "response": {
                        "status_code": 200, "request_id": str(n), "body": body}}) + "\n")
            offline = time.perf_counter() - t1
            res = judge.main(**common, judge=offline_judge, batch_opts=BatchOptions(read_results=[str(got)]))
            t0 += offline  # the engine's time is not plug_lite's
        wall = time.perf_counter() - t0
        routes = dict(srv.routes)
    o = res["aggregate"]["overall"]
    return {"mode": mode, "wall_s": wall, "requests": sum(routes.values()), "routes": routes,
            "outcome": (o["a_win"], o["b_win"], o["tie"], o["error"]), "calls": res["calls"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=805, help="instructions (X-AlpacaEval: 805)")
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per live call")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--poll", type=float, default=0.05, help="--batch-poll seconds")
    ap.add_argument("--lines-per-poll", type=int, default=400, help="batch lines the server runs per status poll")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        a, b = answers(t / "warm" if (t / "warm").mkdir() is None else t, 3)
        for mode in ("live", "batch", "files"):  # imports and first-use costs, not timed
            run(mode, a, b, t / "warm" / mode, args)
        a, b = answers(t, args.n)
        for mode in ("live", "batch", "files"):
            rows.append(run(mode, a, b, t / mode, args))
    assert len({r["outcome"] for r in rows}) == 1 and rows[0]["outcome"][3] == 0, [r["outcome"] for r in rows]
    calls = 2 * args.n
    live = rows[0]
    lines = [
        f"\n## bench_batch.py ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n",
        f"Pairwise judge of {args.n} instructions x 2 orders = {calls} calls against the scripted OpenAI server, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (load average "
        f"{os.getloadavg()[0]:.1f} at the end: a shared machine), openai client "
        f"{__import__('openai').__version__}. Live: {args.latency:g} s per call, --parallel {args.parallel}. "
        f"Batch API: --batch --batch-wait --batch-poll {args.poll:g}, the server running {args.lines_per_poll} "
        "lines per status poll (a real batch takes minutes to 24 h: this is plug_lite's side only). Files: "
        "--write-requests, the result file written by the benchmark (its time left out), --read-results. "
        f"The three runs gave the same verdicts (A {live['outcome'][0]}, B {live['outcome'][1]}, "
        f"tie {live['outcome'][2]}).\n",
        f"Command: `python benchmarks/bench_batch.py --n {args.n} --latency {args.latency:g} --parallel "
        f"{args.parallel} --poll {args.poll:g} --lines-per-poll {args.lines_per_poll}`\n",
        "| mode | client wall s | HTTP requests | requests by route | requests / call |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        by = ", ".join(f"{k} {v}" for k, v in sorted(r["routes"].items())) or "none"
        lines.append(f"| {r['mode']} | {r['wall_s']:.2f} | {r['requests']} | {by} | {r['requests'] / calls:.4f} |")
    lines.append(f"\nHTTP requests, live / batch: **{live['requests'] / max(1, rows[1]['requests']):.0f}x** fewer "
                 f"by batch; client wall time, batch / live: {rows[1]['wall_s'] / live['wall_s']:.2f}, "
                 f"files / live: {rows[2]['wall_s'] / live['wall_s']:.2f}.")
    publish("\n".join(lines) + "\n", append=not args.no_append)


if __name__ == "__main__":
    main()
