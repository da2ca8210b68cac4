"""plug-lite serve: the real server on 127.0.0.1 (a subprocess, port 0) and the real ``openai``
client, on a tiny GGUF trained to answer in the PLUG format (tests/plug_gguf.py, with one answer
whose characters span tokens) and on the random tiny model (a plain GGUF that never ends a turn)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import plug_gguf  # noqa: E402

from plug_lite import formats  # noqa: E402
from plug_lite.engine import EngineOptions  # noqa: E402
from plug_lite.spec import PlugSpec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONVS = plug_gguf.CONVERSATIONS + [plug_gguf.RARE]  # (question, pivot instruction, pivot response, answer)
KEY = "serve-test-key-not-a-secret"
ALLOWED = "http://allowed.example"


def pivot_text(pi: str, pr: str) -> str:
    return f"English instruction: {pi}\n\nEnglish response: {pr}"


class ServerProcess:
    """``python -m plug_lite.serve MODEL --port 0 ...`` with its stdout and stderr in files."""

    def __init__(self, tmp: Path, model: Path, *args: str, env: dict | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = tmp / "stdout.txt", tmp / "stderr.txt"
        self._out, self._err = open(self.out_path, "w"), open(self.err_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "plug_lite.serve", str(model), "--port", "0", *args],
            stdout=self._out, stderr=self._err, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))
        deadline = time.time() + 180
        while not (m := re.search(r"OpenAI-compatible API at (\S+)", self.stderr())):
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                pytest.fail(f"the server did not start:\n{self.stderr()[-2000:]}")
            time.sleep(0.2)
        self.url = m.group(1)
        self.root = self.url.removesuffix("/v1")

    def stderr(self) -> str:
        return self.err_path.read_text()

    def logs(self) -> list[dict]:
        return [json.loads(line) for line in self.out_path.read_text().splitlines() if line.strip()]

    def log_for(self, cid: str, timeout: float = 60) -> dict:
        """The log line of the completion ``cid`` (a job logs itself once it has ended)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for rec in self.logs():
                if rec.get("id") == cid:
                    return rec
            time.sleep(0.05)
        pytest.fail(f"no log line for {cid}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()


@pytest.fixture(scope="module")
def serve_model(tiny_model) -> dict:
    return plug_gguf.build(tiny_model, CONVS)


@pytest.fixture(scope="module")
def server(serve_model, tmp_path_factory):
    """The PLUG model, a key from the environment, --json logs."""
    s = ServerProcess(tmp_path_factory.mktemp("serve-plug"), serve_model["plug"], "--json",
                      env={"PLUG_LITE_API_KEY": KEY})
    yield s
    s.close()


@pytest.fixture(scope="module")
def plain_server(tiny_gguf, tmp_path_factory):
    """The random model (no PLUG keys, never ends a turn), with CORS for one origin, --json."""
    s = ServerProcess(tmp_path_factory.mktemp("serve-plain"), tiny_gguf, "--json", "--cors", ALLOWED)
    yield s
    s.close()


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=300)


def _stream(client, question: str, **kw) -> tuple[dict, list]:
    """Content, reasoning, finish reason, usage and the chunks of one streamed answer."""
    out = {"content": "", "reasoning": "", "finish": None, "usage": None}
    chunks = list(client.chat.completions.create(model="any", messages=[{"role": "user", "content": question}],
                                                 stream=True, **kw))
    for ch in chunks:
        if ch.usage is not None:
            out["usage"] = ch.usage
        for c in ch.choices:
            out["content"] += c.delta.content or ""
            out["reasoning"] += getattr(c.delta, "reasoning_content", None) or ""
            out["finish"] = c.finish_reason or out["finish"]
    return out, chunks


# --------------------------------------------------------------------------------------------
# Start, models, answers


def test_start_prints_url_and_curl_without_the_key(server):
    err = server.stderr()
    assert re.match(r"http://127\.0\.0\.1:\d+/v1$", server.url)
    assert "plug-tiny-zh.gguf (PLUG, Chinese via English; pivot -> reasoning)" in err
    curl = next(line for line in err.splitlines() if line.startswith("try: curl "))
    assert f"{server.url}/chat/completions" in curl and "Authorization: Bearer $PLUG_LITE_API_KEY" in curl
    assert KEY not in err and KEY not in server.out_path.read_text()
    # the curl line works as printed, once the key is filled in
    cmd = curl.removeprefix("try: ").replace("$PLUG_LITE_API_KEY", KEY)
    if shutil.which("curl"):
        r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
        assert json.loads(r.stdout)["object"] == "chat.completion"


def test_models(client, server):
    models = client.models.list().data
    assert [m.id for m in models] == ["plug-tiny-zh"] and models[0].owned_by == "plug-lite"
    assert client.models.retrieve("plug-tiny-zh").id == "plug-tiny-zh"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_answer_keeps_the_pivot_in_reasoning_content(client):
    t0 = int(time.time())
    for q, pi, pr, answer in CONVS[:2]:
        r = client.chat.completions.create(model="plug-tiny-zh", messages=[{"role": "user", "content": q}])
        msg = r.choices[0].message
        assert msg.content == answer
        assert msg.reasoning_content == pivot_text(pi, pr)
        assert r.choices[0].finish_reason == "stop" and r.object == "chat.completion" and msg.role == "assistant"
        assert r.id.startswith("chatcmpl-") and t0 - 5 <= r.created <= time.time() + 5
        assert r.model == "plug-tiny-zh" and r.system_fingerprint.startswith("fp_")
        u = r.usage
        assert u.prompt_tokens > 20 and u.total_tokens == u.prompt_tokens + u.completion_tokens
        assert 0 < u.completion_tokens_details.reasoning_tokens < u.completion_tokens


def test_stream_keeps_the_pivot_in_reasoning_content(client):
    for q, pi, pr, answer in CONVS[:2]:
        out, chunks = _stream(client, q, stream_options={"include_usage": True})
        assert out["content"] == answer and out["reasoning"] == pivot_text(pi, pr) and out["finish"] == "stop"
        assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
        assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.created for c in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices == [] and out["usage"].completion_tokens_details.reasoning_tokens > 0
        # every reasoning delta comes before the first content delta
        kinds = [("r" if getattr(c.choices[0].delta, "reasoning_content", None) else "c")
                 for c in chunks if c.choices and (c.choices[0].delta.content or getattr(c.choices[0].delta, "reasoning_content", None))]
        assert "".join(kinds) == "r" * kinds.count("r") + "c" * kinds.count("c")
    out, chunks = _stream(client, CONVS[2][0])
    assert out["usage"] is None and all(c.choices for c in chunks)  # no usage chunk unless asked


def test_pivot_modes_per_request(client):
    q, pi, pr, answer = CONVS[1]
    raw = formats.render_plug(pi, pr, answer, target="zh")
    hidden = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}],
                                            extra_body={"pivot": "hidden"}).choices[0].message
    assert hidden.content == answer and getattr(hidden, "reasoning_content", None) is None
    whole = client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}],
                                           extra_body={"pivot": "content"})
    assert whole.choices[0].message.content == raw and getattr(whole.choices[0].message, "reasoning_content", None) is None
    assert whole.usage.completion_tokens_details.reasoning_tokens == 0
    out, _ = _stream(client, q, extra_body={"reasoning_format": "none"})  # llama.cpp's name for the same
    assert out == {**out, "content": raw, "reasoning": ""}
    out, _ = _stream(client, q, extra_body={"pivot": "hidden"})
    assert out == {**out, "content": answer, "reasoning": ""}


# --------------------------------------------------------------------------------------------
# The conversation policy


@pytest.fixture(scope="module")
def local_engine(serve_model):
    from plug_lite.engine import LlamaEngine

    eng = LlamaEngine(serve_model["plug"], threads=1)
    yield eng
    eng.close()


def test_history_keeps_only_target_answers(client, local_engine):
    (q0, pi, pr, a0), (q1, *_) = CONVS[0], CONVS[1]
    system = PlugSpec("plug", "zh", "en").system_prompt()
    scaffold = formats.render_plug(pi, pr, a0, target="zh")
    variants = {
        "target only": [{"role": "assistant", "content": a0}],
        "whole scaffold": [{"role": "assistant", "content": scaffold}],
        "with reasoning_content": [{"role": "assistant", "content": a0, "reasoning_content": pivot_text(pi, pr)}],
    }
    want = len(local_engine.tokenize([{"role": "system", "content": system}, {"role": "user", "content": q0},
                                      {"role": "assistant", "content": a0}, {"role": "user", "content": q1}])[0])
    for name, assistant in variants.items():
        msgs = [{"role": "user", "content": q0}, *assistant, {"role": "user", "content": q1}]
        r = client.chat.completions.create(model="m", messages=msgs, max_tokens=4)
        assert r.usage.prompt_tokens == want, name


def test_client_system_message_is_appended_to_the_plug_prompt(client, local_engine):
    q = CONVS[0][0]
    system = PlugSpec("plug", "zh", "en").system_prompt()
    want = len(local_engine.tokenize([{"role": "system", "content": system + "\n\nYou are a helpful assistant."},
                                      {"role": "user", "content": q}])[0])
    r = client.chat.completions.create(model="m", max_tokens=4, messages=[
        {"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": q}])
    assert r.usage.prompt_tokens == want
    without = client.chat.completions.create(model="m", max_tokens=4, messages=[{"role": "user", "content": q}])
    assert without.usage.prompt_tokens == len(local_engine.tokenize(
        [{"role": "system", "content": system}, {"role": "user", "content": q}])[0])


def test_prompted_plug_sends_the_instruction_and_worked_examples(tiny_gguf, tmp_path):
    """serve --prompted on a model with no PLUG training: the model sees what ``generate
    --prompted`` sends for the same question (PLUG instruction, worked examples, then the client's
    turns), token for token; a client's system message is appended to the instruction; history
    keeps only target answers; the banner says what is served."""
    from plug_lite import openai_api, serve
    from plug_lite.engine import LlamaEngine
    from plug_lite.prompted import PromptedPlug

    ask = PromptedPlug.build("zh", "en", shots=2)
    (q0, pi, pr, a0), (q1, *_) = CONVS[0], CONVS[1]
    eng = LlamaEngine(tiny_gguf, vocab_only=True)
    try:
        backend = serve.Backend(eng, prompted=ask)
        assert backend.mode == "plug" and backend.spec == ask.spec and backend.think is False

        def prompt(msgs):
            return backend.prepare(openai_api.parse_chat_request({"model": "m", "messages": msgs})).prompt

        want_q0 = eng.tokenize(ask.messages(q0))[0]
        assert prompt([{"role": "user", "content": q0}]) == want_q0
        with_sys = ask.messages(q0, system=ask.system_prompt() + "\n\nBe brief.")
        assert prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": q0}]) == \
            eng.tokenize(with_sys)[0]
        history = [{"role": "user", "content": q0}, {"role": "assistant", "content": formats.render_plug(pi, pr, a0, target="zh")},
                   {"role": "user", "content": q1}]
        want = ask.messages(q0) + [{"role": "assistant", "content": a0}, {"role": "user", "content": q1}]
        assert prompt(history) == eng.tokenize(want)[0]
    finally:
        eng.close()
    # the real server: the same prompt length through HTTP, one line for a missing --target
    s = ServerProcess(tmp_path / "prompted", tiny_gguf, "--prompted", "--target", "zh", "--max-new-tokens", "4")
    try:
        assert "prompted PLUG, 2 worked examples, Chinese via English" in s.stderr()
        c = openai.OpenAI(base_url=s.url, api_key="none", max_retries=0, timeout=300)
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": q0}])
        assert r.usage.prompt_tokens == len(want_q0) > 0
    finally:
        s.close()
    r = subprocess.run([sys.executable, "-m", "plug_lite.serve", str(tiny_gguf), "--prompted"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: --prompted needs --target CODE"


# --------------------------------------------------------------------------------------------
# Concurrency, characters across tokens, disconnects


def test_eight_concurrent_streams_get_their_own_complete_answers(server):
    def ask(i: int) -> tuple[int, dict]:
        c = openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=600)
        return i, _stream(c, CONVS[i % len(CONVS)][0])[0]

    before = len(server.logs())
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))
    for i, out in results:
        q, pi, pr, answer = CONVS[i % len(CONVS)]
        assert (out["content"], out["reasoning"], out["finish"]) == (answer, pivot_text(pi, pr), "stop"), i
    deadline = time.time() + 30
    while len(server.logs()) < before + 8 and time.time() < deadline:
        time.sleep(0.05)
    jobs = [r for r in server.logs()[before:] if r.get("id")]
    assert len(jobs) == 8 and all(r["finish_reason"] == "stop" for r in jobs)


def test_characters_that_span_tokens_arrive_whole(client, local_engine):
    q, pi, pr, answer = plug_gguf.RARE
    # the answer's tokens do split characters: some token alone is not valid UTF-8
    toks = local_engine.llm.tokenize(answer.encode(), add_bos=False, special=False)
    broken = 0
    for t in toks:
        try:
            local_engine.llm.detokenize([t]).decode("utf-8")
        except UnicodeDecodeError:
            broken += 1
    assert broken >= 6 and len(toks) > len(answer)
    out, chunks = _stream(client, q)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert out["content"] == answer and out["reasoning"] == pivot_text(pi, pr)
    assert not any("\ufffd" in d for d in deltas) and len(deltas) > 1
    # whole over the raw SSE bytes too (each event's JSON decodes on its own)
    with httpx.stream("POST", f"{client.base_url}chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"messages": [{"role": "user", "content": q}], "stream": True}, timeout=300) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == answer


def _wait_idle(root: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        h = httpx.get(f"{root}/health").json()
        if not h["busy"] and not h["queued"]:
            return h
        time.sleep(0.05)
    pytest.fail("the engine is still busy")


def test_disconnect_stops_generation(plain_server):
    limit = 3000  # the random model never ends a turn: this would run to the limit
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": limit, "stream": True}
    with httpx.Client(timeout=120) as http:
        with http.stream("POST", f"{plain_server.url}/chat/completions", json=body) as r:
            first = []
            for line in r.iter_lines():
                if line.startswith("data: "):
                    first.append(json.loads(line[6:]))
                if len(first) >= 5:
                    break
    cid = first[0]["id"]
    rec = plain_server.log_for(cid)
    assert rec["finish_reason"] == "cancelled" and rec["completion_tokens"] < limit
    assert rec["stopped_after_disconnect_s"] >= 0  # measured; benchmarks/bench_serve.py reports it
    _wait_idle(plain_server.root)
    # a request that is not streamed stops too when its client gives up
    before = len(plain_server.logs())
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{plain_server.url}/chat/completions", json={**body, "stream": False}, timeout=httpx.Timeout(60, read=2))
    deadline = time.time() + 60
    while not any(r.get("id") for r in plain_server.logs()[before:]) and time.time() < deadline:
        time.sleep(0.05)
    rec = next(r for r in plain_server.logs()[before:] if r.get("id"))
    assert rec["finish_reason"] == "cancelled" and rec["completion_tokens"] < limit and not rec["stream"]
    _wait_idle(plain_server.root)
    # and the engine serves the next request
    r = httpx.post(f"{plain_server.url}/chat/completions", json={"messages": body["messages"], "max_tokens": 5}, timeout=120)
    assert r.json()["choices"][0]["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 5


def test_sampling_settings_reach_the_engine(plain_server):
    def sample(**kw) -> str:
        r = httpx.post(f"{plain_server.url}/chat/completions", timeout=120, json={
            "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "temperature": 1.5, "top_k": 0, **kw})
        return r.json()["choices"][0]["message"]["content"]

    a, b, c = sample(seed=7), sample(seed=7), sample(seed=8)
    assert a == b and a != c  # the random model samples near-uniformly over 151,936 tokens
    # a request's seed is for that request: later requests without one are not replays of it
    a, d, e = sample(seed=7), sample(), sample()
    assert a not in (d, e) and d != e


def test_a_long_stop_string_does_not_stall_the_engine(plain_server):
    """A stop string of four million characters (a 12 MB body, under the limit): each token used
    to be checked against every prefix of it (most of an hour per token, the one engine stalled
    for every client); only prefixes no longer than the text held back can match."""
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, "stop": ["天" * 4_000_000]}
    r = httpx.post(f"{plain_server.url}/chat/completions", timeout=120, headers={"Content-Type": "application/json"},
                   content=json.dumps(body, ensure_ascii=False).encode())
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
    assert r.json()["choices"][0]["finish_reason"] == "length"


# --------------------------------------------------------------------------------------------
# Plain and mono models


def test_plain_model_is_served_plain(plain_server):
    c = openai.OpenAI(base_url=plain_server.url, api_key="unused", max_retries=0, timeout=120)
    r = c.chat.completions.create(model="x", messages=[{"role": "user", "content": "hello"}], max_tokens=12)
    msg = r.choices[0].message
    assert msg.content and getattr(msg, "reasoning_content", None) is None
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 12
    assert r.usage.completion_tokens_details is None
    assert "(plain model)" in plain_server.stderr()


def test_mono_model_is_served_plain(serve_model, tmp_path):
    from plug_lite import chat
    from plug_lite.gguf_meta import write_plug_metadata
    from plug_lite.serve import serving

    mono = tmp_path / "mono-zh.gguf"
    write_plug_metadata(serve_model["plain"], mono, PlugSpec("mono", "zh"))
    q = CONVS[0][0]
    want = chat.one_shot(mono, q, max_new_tokens=40, options=EngineOptions(threads=1))["output"]
    with serving(mono, max_new_tokens=40, options=EngineOptions(threads=1)) as srv:
        c = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=120)
        msg = c.chat.completions.create(model="x", messages=[{"role": "user", "content": q}]).choices[0].message
        assert srv.backend.mode == "plain" and srv.backend.describe().startswith("mono, Chinese")
    assert msg.content == want and getattr(msg, "reasoning_content", None) is None


# --------------------------------------------------------------------------------------------
# Bad requests, keys, CORS, logs

BAD = [
    ("invalid JSON", b"{not json", None),
    ("missing messages", {"model": "m"}, "messages"),
    ("messages not an array", {"messages": "hi"}, "messages"),
    ("wrong type", {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ("wrong content type", {"messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ("unknown field", {"messages": [{"role": "user", "content": "hi"}], "frobnicate": True}, "frobnicate"),
    ("prompt over the context", {"messages": [{"role": "user", "content": "天空 " * 5000}]}, "messages"),
    ("n > 1", {"messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
    ("JSON nested too deeply", b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    # a lone UTF-16 surrogate: valid JSON, but no text; it must not reach an error message unescaped
    ("unpaired surrogate in a key", b'{"messages": [{"role": "user", "content": "hi"}], "\\ud800": 1}', "\\ud800"),
    ("unpaired surrogate in a part type", b'{"messages": [{"role": "user", "content": [{"type": "\\udfff"}]}]}',
     "messages[0].content[0].type"),
]


@pytest.mark.parametrize("name,body,param", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_openai_errors_and_the_server_goes_on(server, name, body, param):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(f"{server.url}/chat/completions", content=data, timeout=120,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and err["message"]
    assert "Traceback" not in r.text and "File \"" not in r.text
    assert "Traceback" not in server.stderr()  # nor on the server's console
    if name == "prompt over the context":
        assert err["code"] == "context_length_exceeded"
    ok = httpx.post(f"{server.url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                    json={"messages": [{"role": "user", "content": CONVS[2][0]}]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == CONVS[2][3]


def test_openai_client_sees_the_error(client):
    with pytest.raises(openai.BadRequestError, match="unrecognized request argument: 'frobnicate'"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"frobnicate": 1})


def test_routes_and_methods(server):
    auth = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{server.url}/completions", headers=auth, json={})
    assert r.status_code == 404 and "no route" in r.json()["error"]["message"]
    r = httpx.get(f"{server.url}/chat/completions", headers=auth)
    assert r.status_code == 405 and r.json()["error"]["message"]


def test_api_key_is_required(server):
    url = f"{server.url}/chat/completions"
    body = {"messages": [{"role": "user", "content": CONVS[0][0]}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).models.list()
    assert httpx.get(f"{server.root}/health").json()["status"] == "ok"  # open, holds no data


def test_cors_only_when_asked(server, plain_server):
    pre = {"Origin": ALLOWED, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    r = httpx.options(f"{server.url}/chat/completions", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(f"{server.url}/models", headers={"Origin": ALLOWED, "Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = httpx.options(f"{plain_server.url}/chat/completions", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED
    r = httpx.options(f"{plain_server.url}/chat/completions", headers={**pre, "Origin": "http://evil.example"})
    assert r.headers.get("access-control-allow-origin") != "http://evil.example"
    # the openai JavaScript SDK in a browser page sends its own headers too: the preflight allows them
    stainless = ",".join(f"x-stainless-{h}" for h in ("arch", "lang", "os", "package-version", "retry-count",
                                                          "runtime", "runtime-version", "timeout"))
    r = httpx.options(f"{plain_server.url}/chat/completions",
                      headers={**pre, "Access-Control-Request-Headers": f"authorization,content-type,{stainless}"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ALLOWED
    r = httpx.get(f"{plain_server.url}/models", headers={"Origin": ALLOWED})
    assert r.headers["access-control-allow-origin"] == ALLOWED


def test_json_log_has_one_line_per_request(server, client):
    before = len(server.logs())
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": CONVS[1][0]}])
    rec = server.log_for(r.id)
    assert rec["completion_tokens"] == r.usage.completion_tokens and rec["prompt_tokens"] == r.usage.prompt_tokens
    assert rec["pivot_tokens"] == r.usage.completion_tokens_details.reasoning_tokens
    assert rec["finish_reason"] == "stop" and rec["seconds"] > 0 and rec["decode_tokens_per_s"] > 0
    assert 0 < rec["first_token_s"] <= rec["first_target_s"] <= rec["seconds"]
    httpx.get(f"{server.url}/models")  # refused: no key
    deadline = time.time() + 10
    while len(server.logs()) < before + 2 and time.time() < deadline:
        time.sleep(0.05)
    assert [(x["path"], x["status"]) for x in server.logs()[before:]] == [("/v1/chat/completions", 200), ("/v1/models", 401)]


# --------------------------------------------------------------------------------------------
# The command line


def test_bad_model_or_taken_port_is_one_line_exit_2(tmp_path, serve_model):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "plug_lite.serve", str(tmp_path / "none.gguf")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "none.gguf" in r.stderr and "Traceback" not in r.stderr
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "plug_lite", "serve", str(serve_model["plug"]), "--port", str(port)],
                           capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in r.stderr
    r = subprocess.run([sys.executable, "-m", "plug_lite.serve", str(serve_model["plug"]), "--pivot", "nowhere"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "--pivot" in r.stderr
