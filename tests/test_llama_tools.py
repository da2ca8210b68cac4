"""llama.cpp's programs built from the llama-cpp-python sdist (plug_lite.toolchain): where they are
looked for, and that each one runs on the tiny model (quantize, perplexity, a real HTTP server)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from plug_lite import toolchain


def test_cache_folder_is_keyed_on_version_and_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("PLUG_LITE_CACHE", str(tmp_path))
    portable = toolchain.tools_dir("0.3.36", toolchain.PORTABLE_CMAKE)
    assert portable == tmp_path / "tools" / "llama-0.3.36-nonative"  # beside wheels/llama-0.3.36-nonative
    assert toolchain.tools_dir("0.3.37", toolchain.PORTABLE_CMAKE) != portable
    cuda = toolchain.tools_dir("0.3.36", "-DGGML_NATIVE=OFF -DGGML_CUDA=ON")
    assert cuda != portable and cuda == toolchain.tools_dir("0.3.36", " -DGGML_NATIVE=OFF  -DGGML_CUDA=ON")


def test_only_complete_builds_of_the_installed_version_are_found(monkeypatch, tmp_path):
    monkeypatch.delenv(toolchain.TOOLS_ENV, raising=False)
    monkeypatch.setenv("PLUG_LITE_CACHE", str(tmp_path))
    folder = toolchain.tools_dir()
    folder.mkdir(parents=True)
    for t in toolchain.TOOLS:
        (folder / t).write_text("#!/bin/sh\n")
        (folder / t).chmod(0o755)
    # no build.json: an interrupted build, not used
    assert toolchain.find_tool("llama-quantize") is None
    assert "make tools" in toolchain.tools_status()["hint"]
    (folder / "build.json").write_text("{}")
    assert toolchain.find_tool("llama-quantize") == folder / "llama-quantize"
    # another version's build is never taken
    other = tmp_path / "tools" / "llama-0.0.1-nonative"
    folder.rename(other)
    assert toolchain.find_tool("llama-quantize") is None
    # the environment variable names the one folder looked in
    monkeypatch.setenv(toolchain.TOOLS_ENV, str(other))
    assert toolchain.find_tool("llama-server") == other / "llama-server"
    assert toolchain.tools_status()["missing"] == []
    with pytest.raises(ValueError):
        toolchain.find_tool("llama-cli")


def test_programs_come_from_the_wheels_sources(llama_tools):
    record = json.loads((llama_tools["llama-quantize"].parent / "build.json").read_text())
    assert record["llama_cpp_python"] == toolchain.llama_cpp_version()
    assert "-DGGML_NATIVE=OFF" in record["cmake_args"]
    assert set(record["programs"]) == set(toolchain.TOOLS)


def test_quantize_and_perplexity_run(llama_tools, tiny_256_f16, tmp_path):
    import llama_cpp

    out = tmp_path / "q4.gguf"
    toolchain.run_tool("llama-quantize", [str(tiny_256_f16), str(out), "Q4_K_M", "2"], what="test quantize")
    llm = llama_cpp.Llama(str(out), n_ctx=128, verbose=False)
    try:
        assert llm.metadata["general.file_type"] == "15"  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        assert len(llm.tokenize(b"hello")) > 0
        assert llm.create_completion("hello", max_tokens=4, temperature=0.0)["choices"][0]["text"] is not None
    finally:
        llm.close()
    text = tmp_path / "text.txt"
    text.write_text(" ".join(["The quick brown fox jumps over the lazy dog."] * 60) + "\n" + "天空是蓝色的。" * 40)
    log = toolchain.run_tool("llama-perplexity", ["-m", str(out), "-f", str(text), "-c", "64", "-b", "64", "-t", "2"],
                             what="test perplexity")
    assert "Final estimate: PPL =" in log
    with pytest.raises(Exception, match="llama-quantize failed"):
        toolchain.run_tool("llama-quantize", [str(tmp_path / "missing.gguf"), str(tmp_path / "x.gguf"), "Q4_K_M"],
                           what="test quantize")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _llama_server(server: Path, gguf: Path, log: Path, *flags: str):
    """llama.cpp's own server on a free port, healthy; yields its base URL."""
    port = _free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([str(server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c", "256",
                                 "-t", "2", "--no-webui", *flags], stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    with urllib.request.urlopen(base + "/health", timeout=5) as r:
                        if json.loads(r.read()).get("status") == "ok":
                            break
                except OSError:
                    pass
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.time() < deadline, "llama-server did not become healthy"
                time.sleep(0.5)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _chat(base: str, body: dict) -> dict:
    req = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_server_answers_http(llama_tools, tiny_256_f16, tmp_path):
    with _llama_server(llama_tools["llama-server"], tiny_256_f16, tmp_path / "server.log") as base:
        reply = _chat(base, {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 4, "temperature": 0})
    assert reply["choices"][0]["message"]["role"] == "assistant"
    assert reply["usage"]["completion_tokens"] >= 1


def test_server_leaves_a_think_block_in_content(llama_tools, tiny_256_f16, tmp_path):
    """What docs/share.md says of llama-server and a ``--think`` model: with the template export
    writes (the run's system prompt as its default), the ``<think>`` block stays in ``content``
    whatever ``--reasoning-format`` says (the template shows no reasoning markers to llama.cpp's
    analyser). The model's output is forced by a GBNF grammar: a random model writes no PLUG."""
    from plug_lite import formats, gguf_meta, templates
    from plug_lite.spec import PlugSpec

    spec = PlugSpec("plug", "zh", "en", think=True)
    template = templates.with_default_system(gguf_meta.read_metadata(tiny_256_f16)["tokenizer.chat_template"],
                                             spec.system_prompt())
    gguf = gguf_meta.write_plug_metadata(tiny_256_f16, tmp_path / "think.gguf", spec, template)
    forced = formats.render_plug("Say hello.", "Hello!", "你好！", target="zh", pivot="en", think=True)
    assert forced.startswith("<think>") and "</think>" in forced
    body = {"messages": [{"role": "user", "content": "说你好。"}], "max_tokens": 120, "temperature": 0,
            "grammar": "root ::= " + json.dumps(forced)}
    for flags in ((), ("--reasoning-format", "deepseek")):
        with _llama_server(llama_tools["llama-server"], gguf, tmp_path / "server.log", *flags) as base:
            msg = _chat(base, body)["choices"][0]["message"]
        assert msg["content"] == forced and not msg.get("reasoning_content"), (flags, msg)
