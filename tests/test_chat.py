"""plug-lite chat on a tiny GGUF trained to answer in the PLUG format (tests/plug_gguf.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import plug_gguf  # noqa: E402

from plug_lite import formats  # noqa: E402
from plug_lite.chat import ChatSession, ContextOverflow, one_shot  # noqa: E402
from plug_lite.engine import EngineOptions  # noqa: E402
from plug_lite.io import UserError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
Q = plug_gguf.CONVERSATIONS  # (question, pivot instruction, pivot response, target answer)


@pytest.fixture(scope="session")
def plug_model(tiny_model) -> dict:
    return plug_gguf.build(tiny_model)


def run_chat(*args, input=None, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "plug_lite.chat", *map(str, args)], input=input,
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_session_streams_sections_and_keeps_target_history(plug_model):
    with ChatSession(plug_model["plug"]) as s:
        assert s.mode == "plug" and s.target.code == "zh" and s.pivot.code == "en" and s.note is None
        assert s.engine.n_ctx == 4096  # not the binding's 512
        events = list(s.ask(Q[0][0]))
        by = {}
        for ev in events:
            by[ev.section] = by.get(ev.section, "") + ev.text
        assert by["pivot_instruction"] == Q[0][1]
        assert by["pivot_response"] == Q[0][2]
        assert by["target"] == Q[0][3]
        # The pivot is streamed before the target.
        first_target = next(i for i, e in enumerate(events) if e.section == "target")
        assert all(e.section != "target" for e in events[:first_target]) and first_target > 0
        turn = s.last
        assert turn.parse.status == "ok"
        assert turn.parse == formats.parse(turn.output, target="zh", pivot="en")
        st = turn.stats
        assert st.pivot_tokens > 5 and st.target_tokens > 0
        assert st.pivot_tokens + st.target_tokens == st.completion_tokens
        assert st.first_target_s >= st.first_token_s > 0
        assert st.finish_reason == "stop"
        # Only the target answer goes back into the history.
        assert s.history == [{"role": "user", "content": Q[0][0]}, {"role": "assistant", "content": Q[0][3]}]
        s.answer(Q[1][0])
        assert len(s.history) == 4
        s.reset()
        assert s.history == []


def test_interrupted_or_failed_turn_keeps_the_session(plug_model):
    with ChatSession(plug_model["plug"], options=EngineOptions(ctx=256)) as s:
        gen = s.ask(Q[0][0])
        next(gen)
        gen.close()  # what Ctrl-C does in the REPL
        assert s.history == [] and s.last.stats.finish_reason == "interrupted"
        with pytest.raises(ContextOverflow, match=rf"\d+ tokens .*context holds {s.engine.n_ctx}.*--ctx"):
            list(s.ask("很长的问题 " * 80))
        assert s.history == []
        assert s.answer(Q[2][0])["target_response"] == Q[2][3]


def test_one_shot_plain_and_mono(plug_model):
    d = one_shot(plug_model["plain"], Q[0][0])
    assert d["status"] == "plain" and "no PLUG metadata" in d["note"]
    # The same weights read as PLUG through flags.
    d = one_shot(plug_model["plain"], Q[0][0], target="zh")
    assert d["status"] == "ok" and d["target_response"] == Q[0][3] and d["format"] == "plug" and d["target"] == "zh"
    # As a mono model, the whole output is the target answer (no pivot section recognised).
    d = one_shot(plug_model["plug"], Q[1][0], fmt="mono", system=plug_gguf.rows()[0]["system"])
    assert d["format"] == "mono" and d["pivot_instruction"] is None and d["stats"]["pivot_tokens"] == 0


def test_cli_one_shot_text_stdin_and_json(plug_model):
    r = run_chat(plug_model["plug"], "--prompt", Q[0][0])
    assert r.returncode == 0, r.stderr
    assert r.stdout == Q[0][3] + "\n"
    assert "tok/s" in r.stderr and "pivot" in r.stderr
    r = run_chat(plug_model["plug"], input=Q[1][0])
    assert r.returncode == 0 and r.stdout == Q[1][3] + "\n"
    r = run_chat(plug_model["plug"], "--json", "--prompt", Q[2][0])
    d = json.loads(r.stdout)
    assert d["status"] == "ok" and d["target_response"] == Q[2][3] and d["pivot_instruction"] == Q[2][1]
    assert d["stats"]["pivot_tokens"] > 0 and d["stats"]["decode_tokens_per_s"] > 0
    # language confusion of the turn: the one Chinese line is Chinese, both pivot lines English
    assert d["confusion"]["target"]["line_clean_rate"] == 1.0 and d["confusion"]["target"]["word_clean_rate"] == 1.0
    assert (d["confusion"]["pivot"]["lines"], d["confusion"]["pivot"]["wrong_lines"]) == (2, 0)
    r = run_chat(plug_model["plug"], "--show-pivot", "--prompt", Q[0][0])
    assert Q[0][1] in r.stdout and Q[0][2] in r.stdout and r.stdout.rstrip().endswith(Q[0][3])


def test_llama_cpp_log_only_with_verbose(plug_model, monkeypatch):
    """llama.cpp logs while it loads (info lines, and a warning: with LLAMA_GRAPH_REUSE_DISABLE set
    it says so at its warning level, which llama-cpp-python lets through); chat shows none of it
    unless --verbose, and answers the same."""
    monkeypatch.setenv("LLAMA_GRAPH_REUSE_DISABLE", "1")
    quiet = run_chat(plug_model["plug"], "--prompt", Q[0][0], "--json")
    loud = run_chat(plug_model["plug"], "--prompt", Q[0][0], "--json", "--verbose")
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert "llama_context:" not in quiet.stderr and "graph reuse disabled" not in quiet.stderr
    assert quiet.stderr.strip().splitlines() == [quiet.stderr.strip().splitlines()[-1]]  # the stats line alone
    assert "llama_context: graph reuse disabled" in loud.stderr
    assert "llama_context: n_ctx" in loud.stderr
    assert json.loads(quiet.stdout)["answer"] == json.loads(loud.stdout)["answer"] == Q[0][3]


@pytest.mark.parametrize("kind", ["missing", "not_gguf", "truncated", "folder"])
def test_bad_model_file_is_one_line_exit_2(plug_model, tmp_path, kind):
    path = tmp_path / "m.gguf"
    if kind == "not_gguf":
        path.write_text("hello, not a model\n" * 10)
    elif kind == "truncated":
        data = Path(plug_model["plug"]).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "folder":
        path.mkdir()
    r = run_chat(path, "--prompt", "hi")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0]
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("kind", ["missing", "not_gguf", "missing_lora"])
def test_bad_model_path_is_reported_before_stdin_is_read(plug_model, tmp_path, kind):
    # stdin is a pipe here, not a terminal: the bad path is the error to report, whatever stdin holds
    path = tmp_path / "m.gguf"
    args = [path]
    if kind == "not_gguf":
        path.write_text("hello, not a model\n")
    elif kind == "missing_lora":
        args = [plug_model["plug"], "--lora", path]
    for stdin in ("", "你好\n"):
        r = run_chat(*args, input=stdin)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "stdin" not in lines[0] and str(path) in lines[0]


def test_truncated_header_is_caught_before_llama_cpp(plug_model, tmp_path):
    from plug_lite.gguf_meta import check as check_gguf

    data = Path(plug_model["plug"]).read_bytes()
    (tmp_path / "a.gguf").write_bytes(data[:1000])
    (tmp_path / "b.gguf").write_bytes(data[:-100])
    for name in ("a.gguf", "b.gguf"):
        with pytest.raises(UserError, match="truncated"):
            check_gguf(tmp_path / name)
    assert check_gguf(plug_model["plug"]) == Path(plug_model["plug"])


def _spawn(model, *args):
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, PYTHONPATH=str(REPO), TERM="dumb")
    child = pexpect.spawn(sys.executable, ["-m", "plug_lite.chat", str(model), *args], env=env,
                          cwd=str(REPO), encoding="utf-8", timeout=60)
    child.expect_exact(">>> ")
    return child


def test_repl_through_a_terminal(plug_model):
    child = _spawn(plug_model["plug"])
    child.sendline(Q[0][0])
    child.expect("tok/s.*\n")
    shown = child.before
    assert Q[0][3] in shown and "thinking in English" in shown
    assert Q[0][1] not in shown and Q[0][2] not in shown  # the pivot stays hidden
    child.expect_exact(">>> ")
    child.sendline("/pivot")
    child.expect_exact("[pivot shown]")
    child.expect_exact(">>> ")
    child.sendline("/reset")  # the tiny model only knows single turns
    child.expect_exact("[history cleared]")
    child.expect_exact(">>> ")
    child.sendline(Q[1][0])
    child.expect("tok/s.*\n")
    assert Q[1][1] in child.before and Q[1][2] in child.before and Q[1][3] in child.before
    assert "\x1b[2m" in child.before  # dimmed on a terminal
    child.expect_exact(">>> ")
    child.sendline("/reset")
    child.expect_exact("[history cleared]")
    child.expect_exact(">>> ")
    child.sendline("/pivot")
    child.expect_exact("[pivot hidden]")
    child.expect_exact(">>> ")
    child.sendintr()  # Ctrl-C at the prompt keeps the session
    child.expect_exact(">>> ")
    child.sendline("/lang xx")
    child.expect("unknown language code")
    child.expect_exact(">>> ")
    child.sendline(Q[2][0])
    child.expect_exact(Q[2][3])
    child.expect_exact(">>> ")
    child.sendline("")  # an empty line exits
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


def pexpect_eof():
    import pexpect

    return pexpect.EOF


@pytest.mark.parametrize("how", ["ctrl-d", "/exit"])
def test_repl_exit_paths(plug_model, how):
    child = _spawn(plug_model["plain"])
    if how == "ctrl-d":
        child.sendeof()
    else:
        child.sendline("/exit")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0


def test_lora_adapter_gguf_over_base(plug_model, tmp_path):
    """--lora: an adapter GGUF (zero-initialised LoRA, so neutral) applied over the base GGUF."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from plug_lite.convert import lora_to_gguf

    base = AutoModelForCausalLM.from_pretrained(str(plug_model["hf"]))
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(str(tmp_path / "ad"))
    adapter = lora_to_gguf(tmp_path / "ad", plug_model["hf"], tmp_path / "ad.gguf")
    r = run_chat(plug_model["plug"], "--lora", adapter, "--prompt", Q[1][0])
    assert r.returncode == 0, r.stderr
    assert r.stdout == Q[1][3] + "\n"
    r = run_chat(plug_model["plug"], "--lora", tmp_path / "missing.gguf", "--prompt", Q[1][0])
    assert r.returncode == 2 and "missing.gguf: file not found" in r.stderr


def test_ctrl_c_stops_the_answer_and_keeps_the_session(plug_model):
    # Greedy, the tiny model without its PLUG keys rambles for thousands of tokens: time to
    # interrupt it (at temperature 5 it sometimes ended its turn after a few tokens).
    child = _spawn(plug_model["plain"], "--temperature", "0", "--max-new-tokens", "3000", "--ctx", "4096")
    child.sendline("hello")
    child.expect_exact("hello\r\n")  # the terminal's echo
    child.expect(r"\S")  # some answer text arrived
    child.sendintr()
    child.expect_exact("[answer stopped; the session goes on]")
    child.expect_exact(">>> ")
    child.sendline("/reset")
    child.expect_exact("[history cleared]")
    child.expect_exact(">>> ")
    child.sendline("")
    child.expect(pexpect_eof())
    child.close()
    assert child.exitstatus == 0
