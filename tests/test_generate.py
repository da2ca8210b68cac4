"""plug-lite generate: llama.cpp, a local OpenAI-compatible server and transformers, resumable."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import plug_gguf  # noqa: E402

from plug_lite import generate as G  # noqa: E402
from plug_lite.io import UserError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
Q = plug_gguf.CONVERSATIONS


@pytest.fixture(scope="session")
def plug_model(tiny_model) -> dict:
    return plug_gguf.build(tiny_model)


def write_eval(path: Path, n_unknown: int = 0) -> list[dict]:
    """The three known questions (ids k0..k2) plus unknown ones the model answers at length."""
    recs = [{"id": f"k{i}", "instruction": q, "category": "known", "dataset": "tiny"} for i, (q, *_) in enumerate(Q)]
    recs += [{"id": f"u{i}", "instruction": f"请写一首关于第{i}座山的长诗。"} for i in range(n_unknown)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return recs


def gen_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "plug_lite.generate", *map(str, args)]


ENV = dict(os.environ, PYTHONPATH=str(REPO))


def kill_after_records(cmd: list[str], out: Path, n: int, timeout: float = 120) -> None:
    """Start ``cmd``, SIGKILL it once ``out`` holds ``n`` lines."""
    proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if out.exists() and out.read_bytes().count(b"\n") >= n:
            break
        if proc.poll() is not None:
            raise AssertionError(f"generate ended before it was killed: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def check_resumed(out: Path, before: bytes, recs: list[dict]) -> list[dict]:
    after = out.read_bytes()
    complete = before[: before.rfind(b"\n") + 1]
    assert after.startswith(complete)  # the records written before the kill are untouched
    rows = [json.loads(l) for l in after.decode().splitlines()]
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) and set(ids) == {r["id"] for r in recs}
    for r in rows:
        assert tuple(r) == G.FIELDS
    return rows


def check_known(rows: list[dict]) -> None:
    by = {r["id"]: r for r in rows}
    for i, (q, pi, pr, t) in enumerate(Q):
        r = by[f"k{i}"]
        assert (r["status"], r["target_response"], r["answer"], r["pivot_instruction"], r["pivot_response"]) == ("ok", t, t, pi, pr)
        assert r["category"] == "known" and r["dataset"] == "tiny" and r["target"] == "zh" and r["pivot"] == "en"
        assert r["finish_reason"] == "stop" and r["decoding"]["temperature"] == 0


def test_llama_cpp_resumes_after_sigkill(plug_model, tmp_path):
    ev = tmp_path / "eval.jsonl"
    recs = write_eval(ev, n_unknown=12)
    out = tmp_path / "answers.jsonl"
    cmd = gen_cmd(plug_model["plug"], "--eval-set", ev, "--lang", "zh", "--out", out, "--max-new-tokens", 300)
    kill_after_records(cmd, out, 4)
    before = out.read_bytes()
    assert 4 <= before.count(b"\n") < len(recs)
    with open(out, "ab") as f:  # as if killed in the middle of a write
        f.write(b'{"id": "u9", "instr')
    r = subprocess.run(cmd + ["--no-progress"], env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "answers (" in r.stderr and "mean tokens: pivot" in r.stderr
    rows = check_resumed(out, before, recs)
    check_known(rows)
    known = [r for r in rows if r["id"].startswith("k")]
    for r in known:
        tok = r["tokens"]
        assert tok["pivot"] > 5 and tok["target"] > 0 and tok["pivot"] + tok["target"] == tok["completion"]
        assert tok["prompt"] > 20 and r["generator"] == "plug-tiny-zh" and r["decoding"]["backend"] == "llama.cpp"
    # Nothing left to do: a third run writes nothing.
    size = out.stat().st_size
    assert subprocess.run(cmd + ["--no-progress"], env=ENV, cwd=REPO, capture_output=True, timeout=120).returncode == 0
    assert out.stat().st_size == size


def test_llama_cpp_log_only_with_verbose(plug_model, tmp_path, capsys, monkeypatch):
    """llama.cpp's own log (its info lines, and the warning it gives when LLAMA_GRAPH_REUSE_DISABLE
    is set) stays off the terminal unless --verbose."""
    monkeypatch.setenv("LLAMA_GRAPH_REUSE_DISABLE", "1")
    ev = tmp_path / "eval.jsonl"
    write_eval(ev)
    args = [str(plug_model["plug"]), "--eval-set", str(ev), "--lang", "zh", "--limit", "1", "--max-new-tokens", "8",
            "--no-progress"]
    assert G.cli([*args, "--out", str(tmp_path / "quiet.jsonl")]) == 0
    quiet = capsys.readouterr().err
    assert "answers (" in quiet and "llama_context:" not in quiet and "graph reuse disabled" not in quiet
    assert G.cli([*args, "--out", str(tmp_path / "loud.jsonl"), "--verbose"]) == 0
    loud = capsys.readouterr().err
    assert "llama_context: graph reuse disabled" in loud and "llama_context: n_ctx" in loud and "answers (" in loud


def test_length_limit_and_summary(plug_model, tmp_path):
    ev = tmp_path / "eval.jsonl"
    recs = write_eval(ev)
    be = G.make_backend(str(plug_model["plug"]))
    try:
        s = G.generate(be, recs, tmp_path / "a.jsonl", fmt="plug", target="zh", max_new_tokens=12, progress=False)
    finally:
        be.close()
    rows = [json.loads(l) for l in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert all(r["finish_reason"] == "length" and r["status"] == "truncated" for r in rows)
    assert all(r["tokens"]["completion"] == 12 for r in rows)
    assert s["status"] == {"truncated": 3} and s["mean_pivot_tokens"] == 12


def test_bad_eval_set_is_one_line(tmp_path):
    ev = tmp_path / "e.jsonl"
    ev.write_text('{"id": 1, "instruction": "a"}\n{"id": 1, "instruction": "b"}\n')
    with pytest.raises(UserError, match="duplicate id '1'"):
        G.load_instructions(str(ev), "zh")
    ev.write_text('{"id": 1}\n')
    with pytest.raises(UserError, match=r"e.jsonl:1: missing field 'instruction'"):
        G.load_instructions(str(ev), "zh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(plug_model):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(plug_model["plug"]),
                             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/models", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("llama_cpp.server exited")
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_openai_endpoint_resumes_after_sigkill(llama_server, tmp_path):
    ev = tmp_path / "eval.jsonl"
    recs = write_eval(ev, n_unknown=12)
    out = tmp_path / "answers.jsonl"
    cmd = gen_cmd("--base-url", llama_server, "--eval-set", ev, "--lang", "zh", "--out", out,
                  "--max-new-tokens", 300, "--generator", "tiny-server")
    kill_after_records(cmd, out, 3)
    before = out.read_bytes()
    assert before.count(b"\n") < len(recs)
    r = subprocess.run(cmd + ["--no-progress"], env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = check_resumed(out, before, recs)
    check_known(rows)
    for r in rows:
        assert r["generator"] == "tiny-server" and r["decoding"]["backend"] == "openai"
        assert r["tokens"]["completion"] > 0 and r["tokens"]["pivot"] is None


def test_transformers_backend_and_adapter_run(plug_model, tmp_path):
    ev = tmp_path / "eval.jsonl"
    recs = write_eval(ev)
    s = G.main(model=str(plug_model["hf"]), eval_set=str(ev), target="zh", out=str(tmp_path / "hf.jsonl"), progress=False)
    assert s["status"] == {"ok": 3}
    rows = [json.loads(l) for l in (tmp_path / "hf.jsonl").read_text().splitlines()]
    check_known(rows)
    assert all(r["decoding"]["backend"] == "transformers" and r["tokens"]["pivot"] > 5 for r in rows)
    # A run folder holding a (zero-initialised, so neutral) LoRA adapter over the same base.
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    base = AutoModelForCausalLM.from_pretrained(str(plug_model["hf"]))
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(str(run / "adapter"))
    s = G.main(model=str(run), eval_set=str(ev), target="zh", out=str(tmp_path / "lora.jsonl"), limit=1, progress=False)
    row = json.loads((tmp_path / "lora.jsonl").read_text())
    assert s["records"] == 1 and row["target_response"] == Q[0][3] and row["generator"] == "run"


class _Refuse(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        body = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                     "code": "invalid_api_key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *a):
        pass


def test_endpoint_401_stops_with_one_line(tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        ev = tmp_path / "eval.jsonl"
        write_eval(ev)
        secret = "sk-test-secret-123456"
        r = subprocess.run(gen_cmd("--base-url", f"http://127.0.0.1:{srv.server_port}/v1", "--model-name", "x",
                                   "--eval-set", ev, "--lang", "zh", "--out", tmp_path / "o.jsonl", "--no-progress"),
                           env=dict(ENV, OPENAI_API_KEY=secret), cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        srv.shutdown()
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "401" in lines[0] and lines[0].startswith("error:")
    assert secret not in r.stderr + r.stdout
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""


# --- the translate-test baseline and exit statuses (issue 12) ---------------------------------------

from scripted_openai import ScriptedOpenAI, completion, user_text  # noqa: E402

from plug_lite import judge  # noqa: E402
from plug_lite.llm import LLMSettings  # noqa: E402


def translating_server(fail_on: tuple[str, ...] = ()):
    """Answers translation requests (the translate prompt) by tagging the text with the target
    language, and everything else as the model under test: "Answer to: <user text>"."""
    def reply(body):
        system = body["messages"][0]["content"] if body["messages"][0]["role"] == "system" else ""
        u = user_text(body)
        if system.startswith("You are a professional translator"):
            text = u.rsplit("<<<TEXT>>>\n", 1)[1].rsplit("\n<<<END>>>", 1)[0]
            if any(f in text for f in fail_on):
                return {"status": 500, "headers": {"retry-after-ms": "5"}}
            into = u.split(" into ", 1)[1].split(".", 1)[0]
            return f"Sure:\n<<<TEXT>>>\n[{into}] {text}\n<<<END>>>"
        return f"Answer to: {u}"
    return reply


def tt_args(srv, ev, out, *extra):
    return ["--base-url", srv.url, "--model-name", "answerer", "--api-key", "sk-test-0123456789", "--eval-set", str(ev),
            "--lang", "zh", "--out", str(out), "--no-progress", "--max-retries", "0", "--translate-test",
            "--translator-base-url", srv.url, "--translator-model", "tr-x", "--translator-api-key", "sk-test-0123456789",
            *map(str, extra)]


def test_translate_test_baseline_over_http(tmp_path, capsys):
    ev = tmp_path / "eval.jsonl"
    recs = write_eval(ev)
    out = tmp_path / "tt.jsonl"
    with ScriptedOpenAI(translating_server()) as srv:
        assert G.cli(tt_args(srv, ev, out)) == 0
        assert srv.calls == 9  # per instruction: translate, answer, translate back
        answering = [b for b in srv.bodies if b["model"] == "answerer"]
        assert [b["messages"][0]["content"] for b in answering] == ["You are a helpful assistant. Answer the user's instruction in English."] * 3
        assert G.cli(tt_args(srv, ev, out)) == 0 and srv.calls == 9  # resumed: nothing left to do
    rows = [json.loads(l) for l in out.read_text(encoding="utf-8").split("\n") if l]
    assert [r["id"] for r in rows] == [r["id"] for r in recs]
    for r, rec in zip(rows, recs):
        assert tuple(r) == G.FIELDS and r["format"] == "translate_test" and r["status"] == "ok"
        assert r["instruction"] == rec["instruction"]
        assert r["pivot_instruction"] == f"[English] {rec['instruction']}"
        assert r["pivot_response"] == r["output"] == f"Answer to: [English] {rec['instruction']}"
        assert r["answer"] == r["target_response"] == f"[Chinese] Answer to: [English] {rec['instruction']}"
        assert (r["target"], r["pivot"], r["generator"]) == ("zh", "en", "answerer")
        assert r["decoding"]["translator"]["kind"] == "endpoint" and r["decoding"]["translator"]["model"] == "tr-x"
        assert "sk-test" not in json.dumps(r)
    assert (tmp_path / "tt.translate-cache.jsonl").exists()
    # judgeable like any answers file
    mono = tmp_path / "mono.jsonl"
    mono.write_text("".join(json.dumps({"id": r["id"], "instruction": r["instruction"], "answer": "答案"},
                                       ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    with ScriptedOpenAI("[[A]]") as srv:
        res = judge.main(a=str(out), b=str(mono), out=str(tmp_path / "j"), judge=LLMSettings(base_url=srv.url, api_key="k"),
                         bootstrap=0)
        assert srv.calls == 6 and "[Chinese] Answer to:" in user_text(srv.bodies[0])
    assert res["aggregate"]["overall"]["n"] == 3 and res["aggregate"]["overall"]["error"] == 0
    assert res["files"]["a"]["format"] == "translate_test"


def test_translate_test_failures_give_exit_3_then_1(tmp_path, capsys):
    ev = tmp_path / "eval.jsonl"
    recs = write_eval(ev, n_unknown=5)
    out = tmp_path / "tt.jsonl"
    with ScriptedOpenAI(translating_server(fail_on=(recs[1]["instruction"],))) as srv:
        rc = G.cli(tt_args(srv, ev, out))
    err = capsys.readouterr().err
    assert rc == 3 and "8 answers (ok 7)" not in err and f"{out}: 7 answers (ok 7)" in err
    assert "warning: 1 of 8 answers failed (first error: id k1: HTTP 500 (not retried)" in err
    assert "k1" not in {json.loads(l)["id"] for l in out.read_text(encoding="utf-8").split("\n") if l}
    with ScriptedOpenAI(translating_server()) as srv:  # the rerun answers only what failed
        assert G.cli(tt_args(srv, ev, out)) == 0 and srv.calls == 3
    assert "warning" not in capsys.readouterr().err
    # an endpoint that fails everything: one line, exit 1, and the run gives up after 5 in a row
    with ScriptedOpenAI(translating_server(fail_on=("",))) as srv:
        rc = G.cli(tt_args(srv, ev, tmp_path / "none.jsonl"))
        assert srv.requests == G.GIVE_UP_AFTER
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and err.startswith("error: all 5 answers failed (first error: id k0: HTTP 500")
    assert err.rstrip().endswith("stopped after 5 failures in a row, 3 not tried")


def test_endpoint_answer_failures_are_counted_not_fatal(tmp_path, capsys):
    ev = tmp_path / "eval.jsonl"
    recs = write_eval(ev)

    def reply(body):
        return {"status": 400, "content": "prompt too long"} if recs[2]["instruction"] in user_text(body) else "好的"

    with ScriptedOpenAI(reply) as srv:
        rc = G.cli(["--base-url", srv.url, "--model-name", "m", "--eval-set", str(ev), "--lang", "zh",
                    "--out", str(tmp_path / "a.jsonl"), "--no-progress", "--format", "mono"])
        assert srv.requests == 3  # the 400 was not retried
    err = capsys.readouterr().err
    assert rc == 3 and "1 of 3 answers failed (first error: id k2:" in err and "HTTP 400 (not retried)" in err


def test_translate_test_with_the_model_itself(plug_model, tmp_path):
    ev = tmp_path / "eval.jsonl"
    write_eval(ev)
    out = tmp_path / "self.jsonl"
    s = G.main(model=str(plug_model["plug"]), eval_set=str(ev), target="zh", out=str(out), translate_test="self",
               max_new_tokens=12, progress=False)
    rows = [json.loads(l) for l in out.read_text(encoding="utf-8").split("\n") if l]
    assert s["made"] == 3 and s["failed"] == 0 and len(rows) == 3  # greedy: the same every run
    for r in rows:
        assert r["format"] == "translate_test" and r["decoding"]["translator"] == {"kind": "self"}
        assert r["pivot_instruction"] and r["decoding"]["backend"] == "llama.cpp"
        assert r["tokens"]["pivot"] == r["tokens"]["completion"] <= 12
    with pytest.raises(UserError, match="drop --format"):
        G.main(model=str(plug_model["plug"]), eval_set=str(ev), target="zh", out=str(out), translate_test="self", fmt="mono")


# --- endpoint answers through batch engines (issue 20) ----------------------------------------------


def _batch_setup(tmp_path):
    """The eval set (k0..k2), a server reply and the generate flags of the batch-engine tests."""
    ev = tmp_path / "eval.jsonl"
    recs = write_eval(ev)

    def reply(body):
        return "答案：" + user_text(body)

    return recs, reply, ["--model-name", "served-plug", "--eval-set", str(ev), "--lang", "zh", "--no-progress",
                         "--format", "mono", "--max-new-tokens", "64"]


def test_endpoint_answers_by_request_file_vllm_results_and_batch_api(tmp_path, capsys):
    """The request lines carry exactly the bodies a live run sends; answers from a vLLM-shaped
    result file and from the Batch API make the same records as the live run."""
    recs, reply, base = _batch_setup(tmp_path)
    ev = tmp_path / "eval.jsonl"
    live, via = tmp_path / "live.jsonl", tmp_path / "via.jsonl"
    with ScriptedOpenAI(reply) as srv:
        assert G.cli(base + ["--base-url", srv.url, "--out", str(live)]) == 0
        sent = list(srv.bodies)
    req = tmp_path / "req.jsonl"
    assert G.cli(base + ["--backend", "openai", "--out", str(via), "--write-requests", str(req)]) == 0
    assert "3 requests written to" in capsys.readouterr().err and not via.exists()
    lines = [json.loads(x) for x in req.read_text(encoding="utf-8").splitlines()]
    assert [x["body"] for x in lines] == sent and all(x["url"] == "/v1/chat/completions" for x in lines)
    manifest = [json.loads(x) for x in (tmp_path / "req.manifest.jsonl").read_text().splitlines()]
    assert [m["id"] for m in manifest] == ["k0", "k1", "k2"]
    # what vllm run-batch writes (BatchRequestOutput), with one request it could not run
    res = tmp_path / "vllm_out.jsonl"
    with open(res, "w", encoding="utf-8") as f:
        for n, x in enumerate(lines):
            if n == 1:
                resp, err = {"status_code": 400, "request_id": "vllm-batch-1", "body": None}, "prompt too long"
            else:
                body = completion(x["body"], reply(x["body"]), str(n))  # the usage the live server reported
                body["choices"][0].update(logprobs=None, stop_reason=None)  # and what vLLM adds
                body["prompt_logprobs"] = None
                resp, err = {"status_code": 200, "request_id": f"vllm-batch-{n}", "body": body}, None
            f.write(json.dumps({"id": f"vllm-{n}", "custom_id": x["custom_id"], "response": resp, "error": err},
                               ensure_ascii=False) + "\n")
    assert G.cli(base + ["--backend", "openai", "--out", str(via), "--read-results", str(res)]) == 3
    err = capsys.readouterr().err
    assert "1 of 3 answers failed (first error: id k1: prompt too long)" in err
    assert "calls: 0 made, 0 cached, 2 by batch, 1 failed" in err
    # a rerun with other decoding is refused before any request is written (nor sent)
    other = [*base[:-1], "32"]
    assert G.cli(other + ["--backend", "openai", "--out", str(via), "--write-requests", str(tmp_path / "r3.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens" in err and err.count("\n") == 1 and not (tmp_path / "r3.jsonl").exists()
    # the next request file holds only that one; the Batch API answers it
    assert G.cli(base + ["--backend", "openai", "--out", str(via), "--write-requests", str(tmp_path / "r2.jsonl")]) == 0
    assert [json.loads(x)["custom_id"] for x in (tmp_path / "r2.jsonl").read_text().splitlines()] == [lines[1]["custom_id"]]
    with ScriptedOpenAI(reply) as srv:
        assert G.cli(base + ["--base-url", srv.url, "--out", str(via), "--batch", "--batch-wait",
                             "--batch-poll", "0.001"]) == 0
        assert srv.calls == 0 and list(srv.batch_lines) == [lines[1]["custom_id"]]

    def rows(p):
        return {r["id"]: {k: v for k, v in r.items() if k != "seconds"}
                for r in map(json.loads, p.read_text(encoding="utf-8").splitlines())}

    got, want = rows(via), rows(live)
    assert got == want and set(got) == {r["id"] for r in recs} and want["k0"]["answer"].startswith("答案：")
    with pytest.raises(UserError, match="runs live only"):
        G.main(eval_set=str(ev), out=str(tmp_path / "x.jsonl"), target="zh", endpoint=LLMSettings(model="m"),
               translate_test="llm", batch_opts=G.llm_batch.BatchOptions(batch=True))
    with pytest.raises(UserError, match="needs the model's name"):
        G.main(eval_set=str(ev), out=str(tmp_path / "x.jsonl"), target="zh",
               batch_opts=G.llm_batch.BatchOptions(write_requests=str(tmp_path / "y.jsonl")))


def test_a_live_rerun_takes_the_answers_a_batch_already_gave(tmp_path, capsys):
    """--batch collected some answers (an expired batch's part) and is still waiting for the
    rest; the user then finishes live. The answers the batch gave are in OUT.calls.jsonl under the
    key of the very body the live run sends: they are taken from there, not bought again."""
    recs, reply, base = _batch_setup(tmp_path)
    out = tmp_path / "via.jsonl"
    with ScriptedOpenAI(reply, batch_fates=[{"expire_after": 2}]) as srv:
        batch = base + ["--base-url", srv.url, "--out", str(out), "--batch"]
        assert G.cli(batch) == 0  # submitted: validating -> in_progress
        assert G.cli(batch) == 0  # 2 lines ran, then it expired; the rest went out again, still running
        assert "still running" in capsys.readouterr().err and not out.exists()
        assert len(srv.batches) == 2 and sum(srv.batch_lines.values()) == 2
        assert G.cli(base + ["--base-url", srv.url, "--out", str(out)]) == 0  # live from here
        assert srv.calls == 1  # only the answer no batch gave
    got = {r["id"]: r for r in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert set(got) == {r["id"] for r in recs}
    assert all(r["answer"].startswith("答案：") for r in got.values())
