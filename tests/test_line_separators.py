"""Records holding U+2028, U+2029, U+0085 and the other characters str.splitlines() breaks lines
on survive write -> read in every verb that reads the project's JSONL (issue 12): data, extract,
train's row loader, generate (eval set and resume), judge (answers and call cache), report,
translate (input and call cache), and the evaluation-set loader."""

from __future__ import annotations

import json
from pathlib import Path

from plug_lite import data, evalsets, extract, generate, judge, report, translate
from plug_lite.io import read_jsonl_resumable, read_records
from plug_lite.llm import LLMSettings
from plug_lite.train import TrainConfig, load_rows
from scripted_openai import ScriptedOpenAI, user_text

# Inside a text, never at its ends: sections and answers are stripped, and these are whitespace.
SEP = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
KEY = "sk-test-lines-0123456789"


def T(word: str) -> str:
    return f"{word} a{SEP}b {word}"


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert "\u2028".encode() in path.read_bytes()  # raw in the file, as the project writes it
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").split("\n") if x]


def test_data_build_and_train_rows(tmp_path):
    src = write(tmp_path / "parallel.jsonl", [
        {"id": f"p{i}", "instruction": T("指令"), "response": T("回答"), "pivot_instruction": T("instruction"),
         "pivot_response": T("response")} for i in range(2)])
    out = tmp_path / "rows.jsonl"
    data.main(target="zh", input=str(src), out=str(out))
    rows = lines(out)
    assert len(rows) == 2 and T("回答") in rows[0]["completion"][0]["content"]
    assert rows[0]["prompt"][-1]["content"] == T("指令")
    got, _ = load_rows(TrainConfig(data=str(out), target="zh"))
    assert [r["completion"] for r in got] == [r["completion"] for r in rows]


def test_extract_and_report(tmp_path):
    plug = f"English instruction: {T('q')}\n\nEnglish response: {T('en')}\n\n中文回复：{T('答')}"
    src = write(tmp_path / "outputs.jsonl", [{"id": "o1", "output": plug}, {"id": "o2", "output": plug}])
    out = tmp_path / "x.jsonl"
    counts = extract.main(file=str(src), target="zh", out=str(out))
    assert counts["counts"]["ok"] == 2
    recs = read_records(out)
    assert recs[0]["target_response"] == T("答") and recs[0]["pivot_response"] == T("en") and recs[0]["output"] == plug
    answers = write(tmp_path / "answers.jsonl", [
        {"id": "a1", "instruction": T("问"), "output": plug, "answer": T("答"), "status": "ok", "format": "plug",
         "lang": "zh", "tokens": {"prompt": 3, "completion": 9, "pivot": 6, "target": 3}, "seconds": 0.1}])
    rep = report.main(offline=[str(answers)], out=str(tmp_path / "rep"), chart=False)
    assert json.dumps(rep)  # read and summarised without a bad-line error


def test_evalset_generate_resume_and_judge(tmp_path):
    ev = write(tmp_path / "ev.jsonl", [{"id": f"e{i}", "instruction": T(f"问题{i}")} for i in range(3)])
    assert [r["instruction"] for r in evalsets.load_eval_set(ev, "zh")] == [T(f"问题{i}") for i in range(3)]
    out = tmp_path / "answers.jsonl"
    kw = dict(eval_set=str(ev), target="zh", out=str(out), fmt="mono", progress=False)
    with ScriptedOpenAI(lambda body: T("回答") + " " + user_text(body)[-3:]) as srv:
        kw["endpoint"] = LLMSettings(base_url=srv.url, model="m", api_key=KEY)
        s = generate.main(**kw)
        assert s["made"] == 3 and srv.calls == 3
        s = generate.main(**kw)  # resume: reads its own output back, nothing left to do
        assert s["made"] == 0 and s["records"] == 3 and srv.calls == 3
    rows = read_jsonl_resumable(out)
    assert rows[0]["instruction"] == T("问题0") and rows[0]["answer"].startswith(T("回答"))

    other = write(tmp_path / "other.jsonl", [{"id": f"e{i}", "instruction": T(f"问题{i}"), "answer": T("别的")}
                                             for i in range(3)])
    verdict = f"Reasoning {SEP} done. [[A]]"
    with ScriptedOpenAI(verdict) as srv:
        res = judge.main(a=str(out), b=str(other), out=str(tmp_path / "j"), judge=LLMSettings(base_url=srv.url, api_key=KEY),
                         bootstrap=0)
        assert srv.calls == 6 and T("别的") in user_text(srv.bodies[0])
        again = judge.main(a=str(out), b=str(other), out=str(tmp_path / "j"), judge=LLMSettings(base_url=srv.url, api_key=KEY),
                           bootstrap=0)
        assert srv.calls == 6 and again["calls"]["cached"] == 6  # the cache was read back whole
    assert res["pairs"][0]["order_ab"]["reply_tail"] == verdict and res["aggregate"]["overall"]["error"] == 0
    assert json.loads((tmp_path / "j" / "judge.json").read_text(encoding="utf-8"))["pairs"][0]["instruction"] == T("问题0")


def test_translate_input_and_cache(tmp_path):
    en = write(tmp_path / "en.jsonl", [{"id": "t1", "instruction": T("Say"), "response": T("Said")}])

    def tagger(body):
        u = user_text(body).split("<<<END>>>\n\n", 1)[1]
        ins = u.split("<<<INSTRUCTION>>>\n", 1)[1].split("\n<<<RESPONSE>>>", 1)[0]
        resp = u.split("<<<RESPONSE>>>\n", 1)[1].rsplit("\n<<<END>>>", 1)[0]
        return f"<<<INSTRUCTION>>>\n译 {ins}\n<<<RESPONSE>>>\n译 {resp}\n<<<END>>>"

    out = tmp_path / "zh.jsonl"
    with ScriptedOpenAI(tagger) as srv:
        first = translate.main(input=str(en), out=str(out), target="zh", translator=LLMSettings(base_url=srv.url, api_key=KEY))
        second = translate.main(input=str(en), out=str(out), target="zh", translator=LLMSettings(base_url=srv.url, api_key=KEY))
        assert srv.calls == 1
    assert first["translated"] == second["translated"] == 1 and second["cached"] == 1
    assert read_records(out)[0]["instruction"] == "译 " + T("Say") and read_records(out)[0]["response"] == "译 " + T("Said")
