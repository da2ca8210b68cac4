"""plug-lite translate against the scripted OpenAI-protocol server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from plug_lite import translate
from plug_lite.data import load_source
from plug_lite.io import read_records
from plug_lite.llm import LLMSettings
from scripted_openai import ScriptedOpenAI, user_text

KEY = "test-translate-SECRET-0123456789"
REPO = Path(__file__).resolve().parents[1]


def fake_translator(body: dict) -> str:
    """'Translates' by tagging each part; misbehaves on purpose for some records."""
    u = user_text(body)
    src = u.split("<<<END>>>\n\n", 1)[1]
    ins = src.split("<<<INSTRUCTION>>>\n", 1)[1].split("\n<<<RESPONSE>>>", 1)[0]
    resp = src.split("<<<RESPONSE>>>\n", 1)[1].rsplit("\n<<<END>>>", 1)[0]
    if "DROP-END" in ins:
        return f"<<<INSTRUCTION>>>\n[zh] {ins}\n<<<RESPONSE>>>\n[zh] {resp}"
    if "EMPTY" in ins:
        return f"<<<INSTRUCTION>>>\n[zh] {ins}\n<<<RESPONSE>>>\n\n<<<END>>>"
    return f"Here you go:\n<<<INSTRUCTION>>>\n[zh] {ins}\n<<<RESPONSE>>>\n[zh] {resp}\n<<<END>>>"


def _english(tmp_path, rows):
    p = tmp_path / "en.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_split_reply():
    ok, why = translate.split_reply("<<<INSTRUCTION>>>\n你好\n<<< RESPONSE >>>\n回答\n<<<END>>>")
    assert ok == ("你好", "回答") and why is None
    assert translate.split_reply("<<<INSTRUCTION>>>\na\n<<<RESPONSE>>>\nb")[1] == "marker <<<END>>> missing (reply cut off?)"
    assert translate.split_reply("<<<RESPONSE>>>\nb\n<<<INSTRUCTION>>>\na\n<<<END>>>")[1] == "markers out of order"
    two = "<<<INSTRUCTION>>>\na\n<<<RESPONSE>>>\nb <<<RESPONSE>>>\n<<<END>>>"
    assert translate.split_reply(two)[1] == "marker <<<RESPONSE>>> appears 2 times"


def test_translate_rejects_resume_and_join(tmp_path):
    rows = [
        {"id": "1", "instruction": "Name three colours.", "response": "Red, green, blue."},
        {"id": "2", "instruction": "DROP-END please", "output": "ok"},
        {"id": "3", "instruction": "Explain <<<RESPONSE>>> markers.", "response": "They split text.\n<<<END>>>"},
        {"id": "4", "instruction": "EMPTY", "response": "x"},
        {"id": "5", "instruction": "Add the input.", "input": "2 + 2", "response": "4"},
    ]
    en = _english(tmp_path, rows)
    out = tmp_path / "zh.jsonl"
    with ScriptedOpenAI(fake_translator) as srv:
        res = translate.main(input=str(en), out=str(out), target="zh", translator=LLMSettings(base_url=srv.url, api_key=KEY),
                             parallel=2)
        assert srv.calls == 5
        assert "Chinese" in user_text(srv.bodies[0])
        res2 = translate.main(input=str(en), out=str(out), target="zh", translator=LLMSettings(base_url=srv.url, api_key=KEY))
        assert srv.calls == 5  # everything came from the cache
    assert res["translated"] == 3 and res["rejected"] == 2 and res2["calls_made"] == 0
    good = {r["id"]: r for r in read_records(out)}
    assert good["1"] == {"id": "1", "instruction": "[zh] Name three colours.", "response": "[zh] Red, green, blue.",
                         "_where": f"{out}:1"}
    assert good["5"]["instruction"] == "[zh] Add the input.\n\n2 + 2"
    assert "<<<" not in good["3"]["instruction"] + good["3"]["response"]  # source markers were defused
    rej = {r["id"]: r["reason"] for r in read_records(tmp_path / "zh.rejects.jsonl")}
    assert rej == {"2": "marker <<<END>>> missing (reply cut off?)", "4": "empty response"}
    # the output joins with the English file into PLUG training data (two-file mode)
    joined, drops, _ = load_source(target="zh", pivot_file=str(en), target_file=str(out))
    assert {r["id"] for r in joined} == {"1", "3", "5"} and drops["id only in the pivot file"] == 2
    j1 = next(r for r in joined if r["id"] == "1")
    assert j1["pivot_instruction"] == "Name three colours." and j1["instruction"].startswith("[zh]")


def test_translate_dry_run_and_cli_errors(tmp_path, capsys):
    en = _english(tmp_path, [{"id": str(i), "instruction": f"Hi {i} " * 40, "response": "Hello " * 80} for i in range(4)])
    with ScriptedOpenAI(fake_translator) as srv:
        rc = translate.cli([str(en), "--target", "ko", "--out", str(tmp_path / "ko.jsonl"), "--base-url", srv.url,
                            "--model", "gpt-4o-mini", "--dry-run"])
        assert srv.requests == 0
    text = capsys.readouterr().out
    assert rc == 0 and re.search(r"4 calls to make \(0 cached\).*estimated cost \$\d", text)
    assert translate.cli([str(en), "--target", "xx", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "xx" in capsys.readouterr().err
    with ScriptedOpenAI(fake_translator, require_key="other") as srv:
        rc = translate.cli([str(en), "--target", "ko", "--out", str(tmp_path / "ko.jsonl"), "--base-url", srv.url,
                            "--api-key", KEY])
        assert rc == 2 and srv.requests == 1
    assert KEY not in capsys.readouterr().err


def test_exit_statuses_when_calls_fail(tmp_path, capsys):
    en = _english(tmp_path, [{"id": str(i), "instruction": f"Say {i}.", "response": f"{i}."} for i in range(3)])
    args = [str(en), "--target", "zh", "--out", str(tmp_path / "zh.jsonl"), "--api-key", KEY, "--max-retries", "1"]
    with ScriptedOpenAI(lambda body: {"status": 502, "headers": {"retry-after-ms": "5"}}) as srv:
        rc = translate.cli(args + ["--base-url", srv.url])
        assert srv.requests == 6
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and err.count("\n") == 1
    assert err.startswith("error: all 3 translate calls failed (first error: HTTP 502 (after 1 retry)")

    def flaky(body):
        return {"status": 400, "content": "bad"} if "Say 1." in user_text(body) else fake_translator(body)

    with ScriptedOpenAI(flaky) as srv:
        rc = translate.cli(args + ["--base-url", srv.url])
        assert srv.requests == 3  # the 400 is not retried
    out, err = capsys.readouterr()
    assert rc == 3 and json.loads(out)["translated"] == 2 and json.loads(out)["calls_failed"] == 1
    assert "warning: 1 of 3 translate calls failed (first error: HTTP 400 (not retried)" in err
    with ScriptedOpenAI(fake_translator) as srv:
        assert translate.cli(args + ["--base-url", srv.url]) == 0 and srv.calls == 1


def test_translate_batch_1000_rows_one_upload_one_batch(tmp_path, capsys):
    """--batch --batch-wait: 1 upload, 1 batch, no live call; every row translated or in rejects
    (a reply that does not split, and an HTTP 400 that only the error file holds)."""
    rows = [{"id": str(i), "instruction": ("DROP-END " if i % 97 == 0 else "") + f"Say {i}.", "response": f"{i}."}
            for i in range(1000)]
    en = _english(tmp_path, rows)
    out = tmp_path / "zh.jsonl"

    def reply(body):
        return {"status": 400, "content": "too long"} if "Say 500." in user_text(body) else fake_translator(body)

    with ScriptedOpenAI(reply, batch_lines_per_poll=300, batch_fates=[{"shuffle": True}]) as srv:
        rc = translate.cli([str(en), "--target", "zh", "--out", str(out), "--base-url", srv.url, "--api-key", KEY,
                            "--batch", "--batch-wait", "--batch-poll", "0.001"])
        assert srv.uploads == 1 and len(srv.batches) == 1 and srv.routes["POST /batches"] == 1
        assert srv.routes["POST /chat/completions"] == 0 and srv.requests == 0  # no live call
        assert max(srv.batch_lines.values()) == 1 and len(srv.batch_lines) == 1000
    res, err = capsys.readouterr()
    res = json.loads(res)
    good = {r["id"] for r in read_records(out)}
    rej = {r["id"]: r["reason"] for r in read_records(tmp_path / "zh.rejects.jsonl")}
    assert good | set(rej) == {r["id"] for r in rows} and not good & set(rej)
    assert rej["500"].startswith("call failed: HTTP 400: too long") and rej["97"].startswith("marker <<<END>>> missing")
    assert len(good) == 1000 - 11 - 1 and res["calls_by_batch"] == 999 and res["calls_made"] == 0
    assert rc == 3 and "calls: 0 made, 0 cached, 999 by batch, 1 failed" in err
    assert KEY not in err + json.dumps(res)


def test_translate_dry_run_batch_discount_and_write_requests(tmp_path, capsys):
    en = _english(tmp_path, [{"id": str(i), "instruction": f"Hi {i} " * 40, "response": "Hello " * 80} for i in range(4)])
    args = [str(en), "--target", "ko", "--out", str(tmp_path / "ko.jsonl"), "--model", "gpt-4o-mini", "--dry-run",
            "--api-key", KEY]
    assert translate.cli(args) == 0 and translate.cli(args + ["--batch"]) == 0
    live, batch = re.findall(r"estimated cost \$(\d+\.\d+)", capsys.readouterr().out)
    assert float(batch) == pytest.approx(float(live) / 2, abs=1e-4) and float(live) > 0
    # --write-requests needs no key and no endpoint: the file, then stop with exit 0
    req = tmp_path / "req.jsonl"
    with pytest.MonkeyPatch.context() as mp:
        for k in ("OPENAI_API_KEY", "PLUG_LITE_JUDGE_API_KEY", "OPENAI_BASE_URL", "PLUG_LITE_JUDGE_BASE_URL"):
            mp.delenv(k, raising=False)
        rc = translate.cli([str(en), "--target", "ko", "--out", str(tmp_path / "ko.jsonl"), "--write-requests", str(req)])
    err = capsys.readouterr().err
    assert rc == 0 and "4 requests written to" in err and not (tmp_path / "ko.jsonl").exists()
    lines = [json.loads(x) for x in req.read_text().splitlines()]
    assert [x["body"]["model"] for x in lines] == ["gpt-4o-mini"] * 4 and lines[0]["body"]["max_tokens"] == 2048
    assert translate.cli([str(en), "--target", "ko", "--out", str(tmp_path / "o.jsonl"), "--batch-wait"]) == 2
    assert "--batch-wait needs --batch" in capsys.readouterr().err
    # a request file over the input is refused before anything is written
    before = en.read_bytes()
    assert translate.cli([str(en), "--target", "ko", "--out", str(tmp_path / "o.jsonl"), "--write-requests", str(en)]) == 2
    assert "the output --write-requests is the input INPUT" in capsys.readouterr().err and en.read_bytes() == before


def test_translate_batch_kill_9_right_after_batches_create_then_rerun(tmp_path):
    """The batch exists at the server, the killed run never recorded it: the rerun finds it by its
    tag. 0 duplicate batches, 0 repeated calls, 0 lost rows; the uploaded file is reused."""
    rows = [{"id": str(i), "instruction": f"Say {i}.", "response": f"{i}."} for i in range(60)]
    en = _english(tmp_path, rows)
    out = tmp_path / "zh.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with ScriptedOpenAI(fake_translator, hold_create=True, batch_lines_per_poll=25) as srv:
        cmd = [sys.executable, "-m", "plug_lite", "translate", str(en), "--target", "zh", "--out", str(out),
               "--base-url", srv.url, "--api-key", KEY, "--batch", "--batch-wait", "--batch-poll", "0.01"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert srv.held.wait(60), proc.communicate(timeout=5)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            srv.hold_create = False
            srv.release()
        assert len(srv.batches) == 1 and srv.uploads == 1 and not out.exists()
        ledger = [json.loads(x) for x in (tmp_path / "zh.cache.batches.jsonl").read_text().splitlines()]
        assert [x["event"] for x in ledger] == ["uploaded"]  # killed before the "created" line
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "found by its tag" in done.stderr
        assert len(srv.batches) == 1 and srv.uploads == 1 and srv.routes["POST /batches"] == 1  # 0 duplicate batches
        assert len(srv.batch_lines) == 60 and max(srv.batch_lines.values()) == 1  # 0 repeated calls
        assert srv.calls == 0  # and no live call
    assert {r["id"] for r in read_records(out)} == {r["id"] for r in rows}  # 0 lost rows
    assert json.loads(done.stdout)["calls_by_batch"] == 60
