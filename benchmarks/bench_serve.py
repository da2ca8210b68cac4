"""``plug-lite serve`` against ``plug-lite chat`` on one GGUF, in one run.

Sections (``--only`` picks some):

* ``speed``: the same instructions answered by chat's streaming path (ChatSession.ask, what
  ``plug-lite chat`` runs, in this process) and by the server (a ``python -m plug_lite.serve``
  subprocess, streamed through the ``openai`` client, default ``--pivot reasoning``), alternating
  chat-first and server-first per instruction so a busy machine hurts both alike. Greedy, so both
  generate the same tokens (checked). Reported: decode tokens/s (chat: after its first token;
  server: as its client sees it, after the first streamed delta), end-to-end tokens/s (request to
  last token, prompt processing included), time to the first target-language token, and the
  server/chat ratios.
* ``concurrency``: 1, 2 and 4 clients streaming at once (each asks the same instructions):
  aggregate tokens/s and time to the first target token per request (requests queue on the one
  model, so the aggregate stays that of one client while waiting grows).
* ``disconnect``: a client closes a long stream; time until ``/health`` reports the engine idle
  (client side) and the server's own time from noticing the disconnect to the stopped generation.
* ``format``: how many instructions get an answer in the PLUG format that ends its turn (status
  ok, finish_reason stop): ``python -m llama_cpp.server`` (not plug-lite) with no system message,
  ``plug-lite chat``, ``plug-lite serve`` with no system message and with the client system
  message "You are a helpful assistant." under the ``append`` and ``replace`` rules (``ignore``
  sends exactly the prompt of "no system message").

Appends its tables to benchmarks/RESULTS.md::

    python benchmarks/bench_serve.py --gguf runs/demo-zh/gguf/Gemma-3-270M-PLUG-zh-Q8_0.gguf
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from bench_generate import _publish, _when_and_load  # noqa: E402

CLIENT_SYSTEM = "You are a helpful assistant."


# --------------------------------------------------------------------------------------------
# Servers


@contextmanager
def plug_server(gguf: Path, *args: str):
    """``python -m plug_lite.serve GGUF --port 0 --json ARGS``: yields (url, log reader)."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    out, err = open(tmp / "out", "w"), open(tmp / "err", "w")
    env = dict(os.environ, PYTHONPATH=str(HERE.parent))
    proc = subprocess.Popen([sys.executable, "-m", "plug_lite.serve", str(gguf), "--port", "0", "--json", *args],
                            stdout=out, stderr=err, env=env)
    try:
        deadline = time.time() + 300
        while not (m := re.search(r"OpenAI-compatible API at (\S+)", (tmp / "err").read_text())):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("plug-lite serve did not start:\n" + (tmp / "err").read_text()[-2000:])
            time.sleep(0.2)

        def logs() -> list[dict]:
            return [json.loads(x) for x in (tmp / "out").read_text().splitlines() if x.strip()]

        yield m.group(1), logs
    finally:
        proc.terminate()
        proc.wait(30)
        out.close()
        err.close()


@contextmanager
def llama_cpp_server(gguf: Path, ctx: int, threads: int):
    """``python -m llama_cpp.server --model GGUF`` on a free port: yields its /v1 URL."""
    import socket
    import tempfile
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(Path(tempfile.mkdtemp(prefix="bench-llama-server-")) / "log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", str(ctx), "--n_threads", str(threads),
                             "--n_threads_batch", str(threads)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("llama_cpp.server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def stream_once(client, messages: list[dict], max_tokens: int, **extra) -> dict:
    """One streamed answer, timed on the client: request -> first delta of any kind, first
    content delta, last delta; the content, reasoning, finish reason and usage."""
    t0 = time.perf_counter()
    out = {"content": "", "reasoning": "", "finish": None, "usage": None, "first_delta": None, "first_content": None}
    stream = client.chat.completions.create(model="m", messages=messages, stream=True, max_tokens=max_tokens,
                                            stream_options={"include_usage": True}, temperature=0, **extra)
    for ch in stream:
        now = time.perf_counter() - t0
        if ch.usage is not None:
            out["usage"] = ch.usage
        for c in ch.choices:
            text, reasoning = c.delta.content or "", getattr(c.delta, "reasoning_content", None) or ""
            if (text or reasoning) and out["first_delta"] is None:
                out["first_delta"] = now
            if text and out["first_content"] is None:
                out["first_content"] = now
            if text or reasoning:
                out["last"] = now
            out["content"] += text
            out["reasoning"] += reasoning
            out["finish"] = c.finish_reason or out["finish"]
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------------------
# Sections


def speed(session, client, prompts: list[str], max_tokens: int) -> tuple[list[str], dict]:
    chat_rows, serve_rows, same = [], [], 0
    for i, p in enumerate(prompts):
        def run_chat():
            session.reset()
            d = session.answer(p)
            st = d["stats"]
            chat_rows.append({"tokens": st["completion_tokens"], "seconds": st["seconds"],
                              "decode": st["decode_tokens_per_s"], "first_target": st["first_target_s"],
                              "answer": d["target_response"] or d["answer"]})

        def run_serve():
            r = stream_once(client, [{"role": "user", "content": p}], max_tokens)
            n = r["usage"].completion_tokens
            serve_rows.append({"tokens": n, "seconds": r["seconds"], "first_target": r["first_content"],
                               "decode": (n - 1) / (r["last"] - r["first_delta"]) if n > 1 and r["last"] > r["first_delta"] else None,
                               "answer": r["content"]})

        for f in ((run_chat, run_serve) if i % 2 == 0 else (run_serve, run_chat)):
            f()
        same += chat_rows[-1]["tokens"] == serve_rows[-1]["tokens"] and chat_rows[-1]["answer"] == serve_rows[-1]["answer"]

    def summary(rows):
        tok = sum(r["tokens"] for r in rows)
        return {"tokens": tok, "decode": statistics.median(r["decode"] for r in rows if r["decode"]),
                "e2e": tok / sum(r["seconds"] for r in rows),
                "first_target": statistics.median(r["first_target"] for r in rows if r["first_target"] is not None)}

    c, s = summary(chat_rows), summary(serve_rows)
    lines = ["| path | tokens | decode tokens/s (median) | end-to-end tokens/s | first target token (median s) |",
             "|---|---|---|---|---|",
             f"| plug-lite chat (ChatSession.ask) | {c['tokens']} | {c['decode']:.1f} | {c['e2e']:.1f} | {c['first_target']:.2f} |",
             f"| plug-lite serve (openai client, stream) | {s['tokens']} | {s['decode']:.1f} | {s['e2e']:.1f} | {s['first_target']:.2f} |",
             "",
             f"Server / chat: decode **{s['decode'] / c['decode']:.3f}**, end-to-end **{s['e2e'] / c['e2e']:.3f}**; "
             f"the same answer, token for token, for {same} of {len(prompts)} instructions."]
    return lines, {"chat": c, "serve": s, "same": same}


def concurrency(url: str, prompts: list[str], max_tokens: int, clients=(1, 2, 4)) -> tuple[list[str], dict]:
    import openai

    lines = ["| clients | requests | aggregate tokens/s | first target token, median s | first target token, max s | wall s |",
             "|---|---|---|---|---|---|"]
    out = {}
    for n in clients:
        results, lock = [], threading.Lock()

        def worker():
            c = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600)
            for p in prompts:
                r = stream_once(c, [{"role": "user", "content": p}], max_tokens)
                with lock:
                    results.append(r)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        tok = sum(r["usage"].completion_tokens for r in results)
        ft = [r["first_content"] for r in results if r["first_content"] is not None]
        out[n] = {"tokens_per_s": tok / wall, "first_target_median": statistics.median(ft), "first_target_max": max(ft)}
        lines.append(f"| {n} | {len(results)} | {tok / wall:.1f} | {statistics.median(ft):.2f} | {max(ft):.2f} | {wall:.0f} |")
    return lines, out


def disconnect(url: str, logs, prompt: str, repeats: int = 3) -> tuple[list[str], dict]:
    import httpx

    root = url.removesuffix("/v1")
    client_side, server_side, tokens = [], [], []
    for _ in range(repeats):
        body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 2000, "stream": True}
        with httpx.Client(timeout=600) as http:
            with http.stream("POST", f"{url}/chat/completions", json=body) as r:
                events = []
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(json.loads(line[6:]))
                    if len(events) >= 8:
                        break
                cid = events[0]["id"]
                closed = time.perf_counter()
        while httpx.get(f"{root}/health").json()["busy"]:
            time.sleep(0.005)
        client_side.append(time.perf_counter() - closed)
        deadline = time.time() + 30
        while not (rec := next((x for x in logs() if x.get("id") == cid), None)) and time.time() < deadline:
            time.sleep(0.05)
        server_side.append(rec["stopped_after_disconnect_s"])
        tokens.append(rec["completion_tokens"])
    lines = [f"Disconnect after 8 streamed chunks of a 2000-token request, {repeats} times: the engine was idle again "
             f"{max(client_side):.3f} s at most after the client closed (as seen by a client polling /health; "
             f"median {statistics.median(client_side):.3f} s); the server stopped generating {max(server_side):.3f} s "
             f"at most after it noticed; {max(tokens)} tokens at most had been generated."]
    return lines, {"client_side_s": client_side, "server_side_s": server_side, "tokens": tokens}


def plug_ok(text: str, finish: str, spec) -> bool:
    from plug_lite import formats

    return finish == "stop" and formats.parse(text, **spec.parser_args()).status == "ok"


FORMAT_PATHS = ("llama_cpp.server", "chat", "serve")


def format_rates(gguf: Path, session, instructions: list[str], max_tokens: int, threads: int, ctx: int,
                 thread_args=(), paths=FORMAT_PATHS) -> tuple[list[str], dict]:
    """PLUG format and ended-by-itself counts through each of ``paths``."""
    import openai

    spec = session.spec
    rows = {}

    def through(url: str, name: str, system: str | None, pivot: str = "content") -> None:
        c = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600)
        ok = ended = 0
        for q in instructions:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": q}]
            kw = {"extra_body": {"pivot": pivot}} if "plug-lite" in name else {}
            r = c.chat.completions.create(model="m", messages=msgs, max_tokens=max_tokens, temperature=0, **kw)
            text, finish = r.choices[0].message.content or "", r.choices[0].finish_reason
            ended += finish == "stop"
            ok += plug_ok(text, finish, spec)
        rows[name] = (ok, ended)
        print(f"  {name}: {ok}/{len(instructions)} PLUG format and ended, {ended} ended", flush=True)

    if "llama_cpp.server" in paths:
        with llama_cpp_server(gguf, ctx, threads) as url:
            through(url, "python -m llama_cpp.server, no system message", None)
    if "chat" in paths:
        ok = ended = 0
        for q in instructions:
            session.reset()
            d = session.answer(q)
            ended += d["stats"]["finish_reason"] == "stop"
            ok += plug_ok(d["output"], d["stats"]["finish_reason"], spec)
        rows["plug-lite chat"] = (ok, ended)
        print(f"  plug-lite chat: {ok}/{len(instructions)}", flush=True)
    for rule in ("append", "replace") if "serve" in paths else ():
        with plug_server(gguf, "--client-system", rule, "--ctx", str(ctx), *thread_args) as (url, _):
            if rule == "append":
                through(url, "plug-lite serve, no system message", None)
            through(url, f"plug-lite serve, system \"{CLIENT_SYSTEM}\", --client-system {rule}", CLIENT_SYSTEM)
    lines = ["| path | PLUG format and ended its turn | ended its turn |", "|---|---|---|"]
    lines += [f"| {k} | {ok}/{len(instructions)} | {ended}/{len(instructions)} |" for k, (ok, ended) in rows.items()]
    return lines, rows


# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", required=True, type=Path)
    ap.add_argument("--prompts", type=int, default=6, help="instructions for the speed and concurrency sections")
    ap.add_argument("--format-prompts", type=int, default=20, help="instructions for the format section (the demo's 20)")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="the demo's limit")
    ap.add_argument("--threads", type=int, help="llama.cpp threads for every path (default: plug_lite's)")
    ap.add_argument("--only", action="append", choices=("speed", "concurrency", "disconnect", "format"))
    ap.add_argument("--format-path", action="append", choices=FORMAT_PATHS,
                    help="the format section through these paths only (default: all)")
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to RESULTS.md")
    a = ap.parse_args()

    import llama_cpp
    import openai

    from plug_lite import evalsets, templates
    from plug_lite.chat import ChatSession
    from plug_lite.engine import EngineOptions

    only = set(a.only or ("speed", "concurrency", "disconnect", "format"))
    session = ChatSession(a.gguf, max_new_tokens=a.max_new_tokens, options=EngineOptions(threads=a.threads))
    threads = session.engine.threads[0]
    thread_args = ("--threads", str(a.threads)) if a.threads else ()
    ctx = session.engine.n_ctx
    target = session.spec.target if session.spec else "zh"
    evalset = [r["instruction"] for r in evalsets.load_eval_set("sample", target, limit=max(a.prompts, a.format_prompts))]
    prompts = evalset[: a.prompts]
    load_before = os.getloadavg()[0]
    sections, data = [], {}
    if only & {"speed", "concurrency", "disconnect"}:
        with plug_server(a.gguf, "--max-new-tokens", str(a.max_new_tokens), *thread_args) as (url, logs):
            client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=3600)
            stream_once(client, [{"role": "user", "content": prompts[0]}], 8)  # warm both
            session.answer(prompts[0])
            if "speed" in only:
                print("speed ...", flush=True)
                lines, data["speed"] = speed(session, client, prompts, a.max_new_tokens)
                sections.append(("Server against chat, same file, same run, alternating", lines))
            if "concurrency" in only:
                print("concurrency ...", flush=True)
                lines, data["concurrency"] = concurrency(url, prompts[:4], a.max_new_tokens)
                sections.append((f"Concurrent streaming clients (each asks the same {min(4, len(prompts))} instructions)", lines))
            if "disconnect" in only:
                print("disconnect ...", flush=True)
                lines, data["disconnect"] = disconnect(url, logs, "请写一篇很长的关于长城历史的文章。")
                sections.append(("A client that disconnects", lines))
    if "format" in only:
        print("format ...", flush=True)
        lines, data["format"] = format_rates(a.gguf, session, evalset[: a.format_prompts], a.max_new_tokens, threads, ctx,
                                             thread_args, tuple(a.format_path or FORMAT_PATHS))
        sections.append((f"PLUG format and ended turns on the first {a.format_prompts} demo instructions "
                         f"(max {a.max_new_tokens} new tokens, greedy)", lines))
    session.close()
    stamp, load_after = _when_and_load()
    cmd = "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:])
    out = [f"## plug-lite serve against plug-lite chat (benchmarks/bench_serve.py), {stamp}", "",
           f"Machine: CPU only, {os.cpu_count()} CPUs ({platform.machine()}), load average {load_before:.1f} at the "
           f"start and {load_after:.1f} at the end{' (shared with other jobs)' if max(load_before, load_after) > 1.5 else ''}; "
           f"llama-cpp-python {llama_cpp.__version__}, openai {openai.__version__}, {threads} llama.cpp thread(s) on "
           f"every path{' (--threads)' if a.threads else ' (plug_lite default)'}. "
           f"File: `{a.gguf.name}` ({a.gguf.stat().st_size / 2**20:.0f} MiB); its chat template "
           + ("inserts the PLUG system prompt when a conversation has none (export's default since templates."
              "with_default_system)." if templates.default_system(session.engine.metadata.get("tokenizer.chat_template"))
              else "has no system prompt of its own (as exported before templates.with_default_system)."),
           f"Command: `{cmd}`.", ""]
    for title, lines in sections:
        out += [f"**{title}**", "", *lines, ""]
    _publish("\n".join(out), not a.no_append)
    print(json.dumps(data, default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
