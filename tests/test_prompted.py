"""Prompted PLUG (plug_lite.prompted): the PLUG instruction and worked examples for an untrained
instruct model; generate over real HTTP (tests/scripted_openai.py) and on the tiny GGUF, chat on
the tiny GGUF, and the answers through judge, report and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import plug_gguf  # noqa: E402

from plug_lite import formats, generate as G, judge, report  # noqa: E402
from plug_lite.data import load_sample  # noqa: E402
from plug_lite.io import UserError  # noqa: E402
from plug_lite.llm import LLMSettings  # noqa: E402
from plug_lite.metrics import offline_metrics  # noqa: E402
from plug_lite.prompted import PROMPTED, PromptedPlug  # noqa: E402
from scripted_openai import ScriptedOpenAI  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
KEY = "prompted-test-key-0000"


@pytest.fixture(scope="session")
def plug_model(tiny_model) -> dict:
    return plug_gguf.build(tiny_model)


def test_prompt_holds_the_instruction_and_examples_in_the_parsed_format():
    p = PromptedPlug.build("zh", shots=2)
    assert len(p.examples) == 2 and p.public()["examples"] == "sample"
    msgs = p.messages("天空为什么是蓝色的？")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert all(h in msgs[0]["content"] for h in ("English instruction:", "English response:", "中文回复："))
    # every worked example parses as a PLUG answer, with the sample's own texts
    sample = {r["id"]: r for r in load_sample("zh")}
    for ex, (user, assistant) in zip(p.examples, zip(msgs[1:5:2], msgs[2:5:2])):
        parsed = formats.parse(assistant["content"], target="zh", pivot="en", fmt="plug")
        assert parsed.status == "ok" and parsed.target == sample[ex["id"]]["response"]
        assert user["content"] == sample[ex["id"]]["instruction"]
    # none of the instructions being answered is an example: the next typical one takes its place
    exclude = [p.examples[0]["instruction"]]
    q = PromptedPlug.build("zh", shots=2, exclude=exclude)
    assert exclude[0] not in [e["instruction"] for e in q.examples] and p.examples[1] in q.examples
    assert PromptedPlug.build("zh", shots=2, exclude=[p.examples[0]["pivot_instruction"]]).examples == q.examples
    assert PromptedPlug.build("ko", shots=0).messages("질문")[-1] == {"role": "user", "content": "질문"}
    with pytest.raises(UserError, match="only 0 worked examples"):
        PromptedPlug.build("zh", shots=1, exclude=[r["instruction"] for r in sample.values()])


def test_examples_from_a_user_file(tmp_path):
    f = tmp_path / "ex.jsonl"
    f.write_text(json.dumps({"id": "e1", "instruction": "你好", "response": "你好！", "pivot_instruction": "Hello",
                             "pivot_response": "Hello!"}, ensure_ascii=False) + "\n", encoding="utf-8")
    p = PromptedPlug.build("zh", shots=1, examples=str(f))
    assert p.messages("x")[2]["content"] == formats.render("plug", target="zh", pivot_instruction="Hello",
                                                            pivot_response="Hello!", target_response="你好！")
    f.write_text(json.dumps({"id": "e1", "instruction": "你好"}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="ex.jsonl.*response"):
        PromptedPlug.build("zh", shots=1, examples=str(f))


def write_eval(path: Path) -> Path:
    recs = [{"id": f"q{i}", "instruction": q, "category": "c"} for i, q in enumerate(["你好吗？", "天空是什么颜色？", "写一首诗。"])]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


def instruct_model(body: dict) -> str:
    """An instruct model: follows the PLUG layout for two questions, answers plainly for the third."""
    q = body["messages"][-1]["content"]
    if "诗" in q:
        return "山高水长，云卷云舒。"
    return formats.render("plug", target="zh", pivot_instruction="How are you?", pivot_response="Fine.",
                          target_response="GOOD 我很好。" if "你好" in q else "GOOD 天空是蓝色的。")


def test_generate_prompted_over_http_then_judge_report_metrics(tmp_path, capsys):
    ev = write_eval(tmp_path / "ev.jsonl")
    out = tmp_path / "prompted.jsonl"
    with ScriptedOpenAI(instruct_model) as srv:
        rc = G.cli(["--eval-set", str(ev), "--target", "zh", "--out", str(out), "--base-url", srv.url, "--api-key", KEY,
                    "--model-name", "instruct", "--prompted", "--shots", "2", "--no-progress"])
        assert rc == 0
        body = srv.bodies[0]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert tuple(rows[0]) == G.FIELDS and {r["format"] for r in rows} == {PROMPTED}
    assert [r["status"] for r in rows] == ["ok", "ok", "not_found"]  # parsed as a trained model's output
    assert rows[0]["answer"] == "GOOD 我很好。" and rows[0]["pivot_instruction"] == "How are you?"
    assert rows[0]["decoding"]["prompted"]["shots"] == 2
    m = offline_metrics(rows)
    assert m["status_share"]["ok"] == pytest.approx(2 / 3) and m["line_clean_rate"] == 1
    # judgeable against anything else: here against a mono-style file
    mono = tmp_path / "mono.jsonl"
    mono.write_text("".join(json.dumps({**r, "format": "mono", "answer": "还行。", "pivot": None,
                                        "pivot_instruction": None, "pivot_response": None}, ensure_ascii=False) + "\n"
                            for r in rows), encoding="utf-8")
    from test_judge import good_judge

    with ScriptedOpenAI(good_judge) as srv:
        res = judge.main(str(out), str(mono), out=str(tmp_path / "j"), judge=LLMSettings(base_url=srv.url, api_key=KEY),
                         bootstrap=50)
    assert res["files"]["a"]["format"] == PROMPTED and res["aggregate"]["overall"]["a_win"] == 2
    report.main([str(tmp_path / "j" / "judge.json")], out=str(tmp_path / "r"))
    md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "| prompted.jsonl | zh | 3 |" in md
    # a second run with another format into the same file is refused
    with ScriptedOpenAI(instruct_model) as srv, pytest.raises(UserError, match="format='plug_prompted'"):
        G.main(eval_set=str(ev), target="zh", out=str(out), endpoint=LLMSettings(base_url=srv.url, api_key=KEY,
                                                                                   model="instruct"), progress=False)
    with pytest.raises(UserError, match="--prompted asks for the PLUG format"):
        G.main(eval_set=str(ev), target="zh", out=str(tmp_path / "x.jsonl"), prompted=True, translate_test="llm")


def test_generate_and_chat_prompted_on_the_tiny_gguf(plug_model, tmp_path):
    ev = write_eval(tmp_path / "ev.jsonl")
    out = tmp_path / "tiny.jsonl"
    s = G.main(str(plug_model["plug"]), eval_set=str(ev), target="zh", out=str(out), prompted=True, shots=1,
               max_new_tokens=24, progress=False)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert s["records"] == 3 and {r["format"] for r in rows} == {PROMPTED}
    assert all(r["status"] in formats.STATUSES for r in rows)
    # the worked example is in the prompt: more prompt tokens than the plain PLUG prompt
    plain = tmp_path / "plain.jsonl"
    G.main(str(plug_model["plug"]), eval_set=str(ev), target="zh", out=str(plain), limit=1, max_new_tokens=4,
           progress=False)
    first_plain = json.loads(plain.read_text(encoding="utf-8").splitlines()[0])
    assert rows[0]["tokens"]["prompt"] > first_plain["tokens"]["prompt"] + 50
    m = offline_metrics(rows)
    assert m["n"] == 3
    assert report.main(offline=[str(out)], out=str(tmp_path / "r"))["offline"]["tiny.jsonl"]["n"] == 3
    # chat --prompted: one answer as JSON, recorded as prompted; the pivot is not printed without --show-pivot
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "plug_lite.chat", str(plug_model["plug"]), "--prompted", "--target", "zh",
           "--shots", "1", "--max-new-tokens", "40"]
    r = subprocess.run(cmd + ["--json", "--prompt", "你好吗？"], capture_output=True, text=True, env=env, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["format"] == PROMPTED and d["status"] in formats.STATUSES and "confusion" in d
    r2 = subprocess.run(cmd + ["--prompt", "你好吗？"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == d["answer"] + "\n"  # the answer alone: pivot hidden
    if d["pivot_response"]:
        assert d["pivot_response"] not in r2.stdout
    # /lang in a prompted session: the Korean instruction and examples, parsed with Korean headers
    from plug_lite.chat import ChatSession

    with ChatSession(plug_model["plug"], prompted=PromptedPlug.build("zh", shots=1), max_new_tokens=4) as s:
        s.set_lang("ko")
        msgs = s.messages("질문")
        assert s.spec.target == "ko" and "한국어 응답:" in msgs[0]["content"] and "한국어 응답:" in msgs[2]["content"]
    r3 = subprocess.run(cmd[:5] + ["--prompt", "x"], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert r3.returncode == 2 and "--prompted needs --target" in r3.stderr
