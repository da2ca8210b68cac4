"""Judge ensembles: two and three scripted judges (tests/scripted_openai.py, real HTTP) whose
verdict patterns are known, so each judge's table, the ensemble's outcomes and the agreement
figures can be checked against values computed by hand (in the comments)."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest

from plug_lite import agreement, judge
from plug_lite.io import UserError
from plug_lite.llm import LLMSettings
from scripted_openai import ScriptedOpenAI, user_text
from test_judge import KEY, sections

IDS = [f"q{i}" for i in range(1, 9)]  # categories alternate: q1 open_qa, q2 writing, q3 open_qa, ...

# each judge's intended combined outcome per pair (q1..q8)
J1 = ["a_win", "a_win", "a_slight", "tie", "b_win", "b_slight", "a_win", "tie"]
J2 = ["a_win", "b_win", "tie", "tie", "b_win", "a_slight", "a_slight", "tie"]
ALWAYS_TIE = ["tie"] * 8
# the verdict letters (A shown first, B shown first) that give each combined outcome
VERDICTS = {"a_win": ("A", "B"), "a_slight": ("A", "C"), "tie": ("C", "C"), "b_slight": ("C", "A"),
            "b_win": ("B", "A")}
PATTERNS = {"j1": J1, "j2": J2, "j3": ALWAYS_TIE, "j1-copy": J1}


def scripted_panel(body: dict) -> str:
    """Each judge (by the model name of the request) follows its pattern."""
    first, _ = sections(user_text(body))
    rid = re.search(r"ANS-([AB])-(q\d+)", first)
    a_first = rid.group(1) == "A"
    pattern = PATTERNS[body["model"]][IDS.index(rid.group(2))]
    letter = VERDICTS[pattern][0 if a_first else 1]
    return f"I compared them. [[{letter}]]"


def answers(tmp_path):
    from test_judge import write_answers

    tmp_path.mkdir(parents=True, exist_ok=True)
    a = write_answers(tmp_path / "a.jsonl", {i: f"ANS-A-{i} 一个回答" for i in IDS})
    b = write_answers(tmp_path / "b.jsonl", {i: f"ANS-B-{i} 另一个回答" for i in IDS}, generator="n")
    return a, b


def run_panel(tmp_path, srv, models, **kw):
    a, b = answers(tmp_path)
    base = LLMSettings(base_url=srv.url, api_key=KEY, max_retries=0, timeout=5)
    return judge.main(str(a), str(b), out=str(tmp_path / "out"), judge=base,
                      ensemble=tuple(LLMSettings(model=m, base_url=srv.url, api_key=KEY, max_retries=0, timeout=5)
                                     for m in models), bootstrap=200, **kw)


# --- agreement, by hand ---------------------------------------------------------------------------

def test_kappa_hand_computed_and_degenerate_cases():
    s1 = ["a", "a", "a", "t", "b", "b", "a", "t"]
    s2 = ["a", "b", "t", "t", "b", "a", "a", "t"]
    # p_o = 5/8; p_e = (4*3 + 2*3 + 2*2) / 64 = 22/64; kappa = (40 - 22) / (64 - 22) = 3/7
    assert agreement.cohen_kappa(s1, s2) == pytest.approx(3 / 7)
    assert agreement.percent_agreement({"x": s1, "y": s2}) == pytest.approx(5 / 8)
    # one judge always says tie: all its agreement is chance, kappa exactly 0
    assert agreement.cohen_kappa(s1, ["t"] * 8) == 0
    # perfect agreement: 1; both judges one label throughout: undefined
    assert agreement.cohen_kappa(s1, s1) == 1
    assert agreement.cohen_kappa(["t"] * 8, ["t"] * 8) is None
    assert agreement.fleiss_kappa({"x": ["t"] * 8, "y": ["t"] * 8, "z": ["t"] * 8}) is None
    # Fleiss with three judges (the third always tie): P = 5/12, P_e = (7^2 + 13^2 + 4^2) / 24^2 = 234/576,
    # kappa = (240 - 234) / (576 - 234) = 1/57
    assert agreement.fleiss_kappa({"x": s1, "y": s2, "z": ["t"] * 8}) == pytest.approx(1 / 57)
    # for two judges Fleiss' kappa is Scott's pi, not Cohen's: different here, so the right one is used
    assert agreement.agreement({"x": s1, "y": s2})["kappa"] == pytest.approx(3 / 7)
    with pytest.raises(ValueError):
        agreement.percent_agreement({"x": s1, "y": s2[:3]})


@pytest.mark.parametrize("outcomes, expected", [
    (["a_win", "a_win"], ("a_win", False)),
    (["a_win", "a_slight"], ("a_win", False)),  # half of the majority side gave a full win
    (["a_slight", "a_slight", "a_win"], ("a_slight", False)),
    (["a_win", "b_win"], ("tie", True)),
    (["a_slight", "tie"], ("tie", True)),
    (["tie", "tie", "b_win"], ("tie", False)),
    (["a_win", "b_win", "tie"], ("tie", True)),
    (["b_slight", "b_win", "a_win"], ("b_win", False)),
    (["a_win", "error"], ("error", False)),
])
def test_ensemble_outcome_rule(outcomes, expected):
    assert judge.ensemble_outcome(outcomes) == expected


# --- two judges -----------------------------------------------------------------------------------

def test_two_judges_tables_ensemble_and_kappa(tmp_path):
    with ScriptedOpenAI(scripted_panel) as srv:
        res = run_panel(tmp_path, srv, ["j1", "j2"])
        assert srv.calls == 2 * 2 * 8  # each judge, both orders, every pair
    ens = res["ensemble"]
    t1, t2 = ens["per_judge"]["j1"]["aggregate"]["overall"], ens["per_judge"]["j2"]["aggregate"]["overall"]
    assert (t1["a_win"], t1["a_slight"], t1["tie"], t1["b_slight"], t1["b_win"]) == (3, 1, 2, 1, 1)
    assert (t2["a_win"], t2["a_slight"], t2["tie"], t2["b_slight"], t2["b_win"]) == (1, 2, 3, 0, 2)
    # ensemble: q1 a_win (both a_win), q2 a vs b -> tie (no majority), q3 a vs tie -> tie (no majority),
    # q4 tie, q5 b_win, q6 b vs a -> tie (no majority), q7 a_win + a_slight -> a_win, q8 tie
    assert [p["outcome"] for p in res["pairs"]] == ["a_win", "tie", "tie", "tie", "b_win", "tie", "a_win", "tie"]
    assert [p["no_majority"] for p in res["pairs"]] == [False, True, True, False, False, True, False, False]
    o = res["aggregate"]["overall"]
    assert (o["a_win"], o["tie"], o["b_win"], o["no_majority"], o["error"]) == (2, 5, 1, 3, 0)
    assert o["adjusted_win_rate"] == pytest.approx((2 + 0.5 * 5) / 8)
    lo, hi = o["adjusted_win_rate_ci95"]
    assert lo <= o["adjusted_win_rate"] <= hi and lo < hi
    ag = ens["agreement"]
    assert ag["kappa_kind"] == "cohen" and ag["kappa"] == pytest.approx(3 / 7)
    assert ag["percent_agreement"] == pytest.approx(5 / 8) and ag["n"] == 8
    # open_qa (q1 q3 q5 q7): j1 a a b a, j2 a t b a: p_o 3/4, p_e (3*2 + 1*1)/16 -> kappa 5/9
    assert ag["by_category"]["open_qa"]["kappa"] == pytest.approx(5 / 9)
    assert ag["by_category"]["open_qa"]["percent_agreement"] == pytest.approx(3 / 4)
    assert ag["by_target"]["zh"]["kappa"] == pytest.approx(3 / 7)
    # differs from the ensemble's side: j1 on q2 q3 q6 (3/8), j2 on q2 q6 (2/8)
    assert ag["disagreement_with_ensemble"] == {"j1": pytest.approx(3 / 8), "j2": pytest.approx(2 / 8)}
    assert ag["most_disagreeing"] == ["j1"]
    # each judge its own cache; the report shows the ensemble, each judge and the agreement
    out = tmp_path / "out"
    assert {p.name for p in out.glob("judge_cache*.jsonl")} == {"judge_cache.j1.jsonl", "judge_cache.j2.jsonl"}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "ensemble of j1, j2" in md and "Cohen's kappa 0.429" in md and "disagreed most with the ensemble: j1" in md
    assert re.search(r"\| j2 \| 8 \| 1 \| 2 \| 3 \| 0 \| 2 \|", md)


def test_degenerate_panels(tmp_path):
    with ScriptedOpenAI(scripted_panel) as srv:
        res = run_panel(tmp_path / "tie", srv, ["j1", "j3"])
        ag = res["ensemble"]["agreement"]
        # j3 always says tie: kappa exactly 0; agreement = j1's ties (q4, q8)
        assert ag["kappa"] == 0 and ag["percent_agreement"] == pytest.approx(2 / 8)
        res = run_panel(tmp_path / "same", srv, ["j1", "j1-copy"])
    ag = res["ensemble"]["agreement"]
    assert ag["kappa"] == 1 and ag["percent_agreement"] == 1 and ag["most_disagreeing"] == []
    # two identical judges: the ensemble is the judge
    assert [p["outcome"] for p in res["pairs"]] == J1


# --- three judges, mixed endpoints, through the command line -------------------------------------

def test_three_judges_on_two_endpoints_from_the_command_line(tmp_path, monkeypatch, capsys):
    a, b = answers(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setenv("J3_KEY", "local-judge-key-0000")
    with ScriptedOpenAI(scripted_panel, require_key=KEY) as api, \
            ScriptedOpenAI(scripted_panel, require_key="local-judge-key-0000") as local:
        rc = judge.cli([str(a), str(b), "--out", str(out), "--model", "j1", "--model", "j2", "--model", "j3",
                        "--base-url", api.url, "--api-key", KEY, "--judge-url", f"j3={local.url}",
                        "--judge-key-env", "j3=J3_KEY", "--bootstrap", "100", "--max-retries", "0"])
        assert rc == 0
        assert api.calls == 2 * 2 * 8 and local.calls == 2 * 8
        assert {b["model"] for b in local.bodies} == {"j3"}
    res = json.loads((out / "judge.json").read_text(encoding="utf-8"))
    ag = res["ensemble"]["agreement"]
    assert ag["kappa_kind"] == "fleiss" and ag["kappa"] == pytest.approx(1 / 57)
    # all three alike on q4 and q8 only
    assert ag["percent_agreement"] == pytest.approx(2 / 8)
    # q1 a_win, q2 no majority, q3 tie (two say tie), q4 tie, q5 b_win, q6 no majority, q7 a_win, q8 tie
    assert [p["outcome"] for p in res["pairs"]] == ["a_win", "tie", "tie", "tie", "b_win", "tie", "a_win", "tie"]
    assert res["aggregate"]["overall"]["no_majority"] == 2
    # differs from the ensemble: j1 3/8 (q2 q3 q6), j2 2/8, j3 3/8 (q1 q5 q7): j1 and j3 share the lead
    assert ag["most_disagreeing"] == ["j1", "j3"]
    pair = {tuple(p["judges"]): p for p in ag["pairs"]}
    assert pair[("j1", "j3")]["cohen_kappa"] == 0
    err = capsys.readouterr().err
    assert "fleiss's kappa 0.018" in err and "local-judge-key" not in json.dumps(res) and KEY not in json.dumps(res)
    # a rerun makes no call: every judge's answers are in its own cache
    with ScriptedOpenAI(scripted_panel) as srv:
        res2 = judge.main(str(a), str(b), out=str(out), judge=LLMSettings(base_url=srv.url, api_key=KEY),
                          judges=None, ensemble=tuple(LLMSettings(model=m, base_url=srv.url, api_key=KEY)
                                                      for m in ("j1", "j2", "j3")), bootstrap=100)
        assert srv.calls == 0
    assert res2["pairs"] == res["pairs"]


def test_judges_file_and_bad_panels(tmp_path, monkeypatch):
    a, b = answers(tmp_path)
    jf = tmp_path / "judges.json"
    with ScriptedOpenAI(scripted_panel) as srv:
        jf.write_text(json.dumps([{"model": "j1", "base_url": srv.url}, {"name": "second", "model": "j2",
                                                                           "base_url": srv.url}]))
        res = judge.main(str(a), str(b), out=str(tmp_path / "o"), judge=LLMSettings(api_key=KEY), judges=str(jf),
                         bootstrap=0)
    assert list(res["ensemble"]["judges"]) == ["j1", "second"]
    assert res["ensemble"]["agreement"]["kappa"] == pytest.approx(3 / 7)
    bad = [([{"model": "j1", "api_key": "sk-x"}], "keys do not go in files"),
           ([{"name": "x"}], "missing field 'model'"),
           ([{"model": "j1"}, {"model": "j1"}], "two judges are named 'j1'"),
           ([{"model": "j1", "colour": 1}], "unknown field 'colour'")]
    for entries, message in bad:
        jf.write_text(json.dumps(entries))
        with pytest.raises(UserError, match=message):
            judge.main(str(a), str(b), out=str(tmp_path / "o"), judge=LLMSettings(api_key=KEY), judges=str(jf))
    with pytest.raises(UserError, match="no judge named 'j9'"):
        judge.main(str(a), str(b), out=str(tmp_path / "o"), judge=LLMSettings(model="j1", api_key=KEY),
                   judge_url=["j9=http://x"])
    with pytest.raises(UserError, match="pairwise mode"):
        judge.main(str(a), out=str(tmp_path / "o"), mode="single", judge=LLMSettings(api_key=KEY),
                   ensemble=(LLMSettings(model="j1"), LLMSettings(model="j2")))


def test_ensemble_dry_run_counts_every_judge_and_batch_engines_are_refused(tmp_path):
    from plug_lite.llm_batch import BatchOptions

    a, b = answers(tmp_path)
    panel = (LLMSettings(model="j1"), LLMSettings(model="j2"), LLMSettings(model="j3"))
    plan = judge.main(str(a), str(b), out=str(tmp_path / "o"), ensemble=panel, dry_run=True, price_in=1.0,
                      price_out=2.0)["dry_run"]
    assert plan["calls"] == 3 * 2 * 8 and [p["calls"] for p in plan["judges"]] == [16, 16, 16]
    assert plan["judge_model"] == "j1 + j2 + j3" and plan["est_cost_usd"] == pytest.approx(
        sum(p["est_cost_usd"] for p in plan["judges"]))
    with pytest.raises(UserError, match="judged live"):
        judge.main(str(a), str(b), out=str(tmp_path / "o"), ensemble=panel[:2],
                   batch_opts=BatchOptions(write_requests=str(tmp_path / "req.jsonl")))


def test_a_failed_judge_call_makes_an_error_row_and_a_rerun_retries_it(tmp_path):
    def flaky(body):
        if body["model"] == "j2" and "ANS-A-q3" in user_text(body):
            return {"status": 400, "content": "context too long"}
        return scripted_panel(body)

    with ScriptedOpenAI(flaky) as srv:
        res = run_panel(tmp_path, srv, ["j1", "j2"])
    bad = [p for p in res["pairs"] if p["outcome"] == "error"]
    assert [p["id"] for p in bad] == ["q3"] and bad[0]["error"].startswith("judge j2: HTTP 400")
    ag = res["ensemble"]["agreement"]
    assert ag["n"] == 7 and ag["errors"] == 1 and res["calls"]["failed"] == 2
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "- `q3`: judge j2: HTTP 400" in md
    with ScriptedOpenAI(scripted_panel) as srv:
        res = run_panel(tmp_path, srv, ["j1", "j2"])
        assert srv.calls == 2  # only j2's two calls of q3
    assert res["ensemble"]["agreement"]["kappa"] == pytest.approx(3 / 7)
