"""plug_lite.drift: the drift of a quantized GGUF from its F16 by section and language, checked
against an independent computation from llama-cpp-python's logits; held-out rows; tensor
fallbacks; the --max-drift / --strict-drift semantics on a file made to drift."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import plug_gguf
from plug_lite import convert, data, drift, imatrix
from plug_lite.io import UserError
from plug_lite.runs import DriftReport, RunRecord
from plug_lite.spec import PlugSpec


@pytest.fixture(scope="session")
def plug_f16(tiny_model) -> Path:
    """The tiny model fine-tuned on PLUG answers (sharp next-token distributions), as F16."""
    return plug_gguf.build(tiny_model)["plug"]


@pytest.fixture(scope="session")
def plug_text(plug_f16) -> tuple[drift.DriftText, list[dict]]:
    rows, _ = data.sample_rows(PlugSpec("plug", "zh", "en"))
    rows = rows[-3:]
    return drift.prepare(rows, plug_f16, fmt="plug", target="zh", pivot="en", source="test"), rows


def test_every_section_is_labelled_with_its_own_text(plug_f16, plug_text):
    from plug_lite.engine import LlamaEngine

    text, rows = plug_text
    assert not text.skipped and len(text.samples) == len(rows)
    eng = LlamaEngine(plug_f16, vocab_only=True, ctx=512)
    try:
        for sample, row in zip(text.samples, rows):
            pieces = eng.pieces(sample.tokens)
            parsed = json.loads(json.dumps(row))["completion"][-1]["content"]
            from plug_lite import formats

            want = formats.parse(parsed, target="zh", pivot="en")
            for sec in drift.SECTIONS:
                got = b"".join(p for p, lab in zip(pieces, sample.labels) if lab == sec).decode("utf-8").strip()
                assert got == getattr(want, sec).strip(), sec
            # the prompt (system + user) is never scored
            first = next(i for i, lab in enumerate(sample.labels) if lab)
            assert b"<|im_start|>assistant" in b"".join(pieces[:first])
    finally:
        eng.close()
    assert text.tokens() == sum(text.tokens(s) for s in drift.SECTIONS) > 0


def _independent(ref: Path, quant: Path, sample: drift.Sample) -> dict[str, "torch.Tensor"]:
    """Per scored position: KL(ref||quant), top-1 agreement and both NLLs, straight from
    llama_cpp.Llama(logits_all=True) logits with torch's log_softmax and kl_div (float64), and
    the section of each position."""
    import llama_cpp
    import torch

    out = []
    for path in (ref, quant):
        llm = llama_cpp.Llama(str(path), n_ctx=1024, logits_all=True, verbose=False, n_threads=2)
        try:
            llm.eval(sample.tokens)
            out.append(torch.tensor(llm.scores[: len(sample.tokens)], dtype=torch.float64))
        finally:
            llm.close()
    keep = [i for i in range(len(sample.tokens) - 1) if sample.labels[i + 1]]
    lr = torch.log_softmax(out[0][keep], dim=-1)
    lq = torch.log_softmax(out[1][keep], dim=-1)
    nxt = torch.tensor([sample.tokens[i + 1] for i in keep])
    return {"kl": torch.nn.functional.kl_div(lq, lr, log_target=True, reduction="none").sum(-1),
            "top1": (lr.argmax(-1) == lq.argmax(-1)).double(),
            "nll_ref": -lr.gather(1, nxt[:, None]).squeeze(1), "nll_q": -lq.gather(1, nxt[:, None]).squeeze(1),
            "section": [sample.labels[i + 1] for i in keep]}


def test_kl_and_top1_equal_an_independent_computation(plug_f16, plug_text, tmp_path):
    import torch

    text, _ = plug_text
    q4 = convert.quantize(plug_f16, tmp_path / "q4.gguf", "Q4_K_M")
    res = drift.compare(plug_f16, q4, text)
    parts = [_independent(plug_f16, q4, s) for s in text.samples]
    sections = [sec for p in parts for sec in p["section"]]
    for sec, got in (("target", res["languages"]["zh"]), (None, res["all"])):
        mask = torch.tensor([sec is None or x == sec for x in sections])
        kl, top1, nll_r, nll_q = (torch.cat([p[k] for p in parts])[mask] for k in ("kl", "top1", "nll_ref", "nll_q"))
        assert got["tokens"] == len(kl)
        assert abs(got["kl_mean"] - kl.mean().item()) < 1e-3
        assert abs(got["top1"] - top1.mean().item()) < 1e-3
        assert abs(got["kl_p99"] - torch.quantile(kl, 0.99).item()) < 1e-3
        assert abs(got["ppl_ratio"] - math.exp((nll_q.mean() - nll_r.mean()).item())) < 1e-3
    # a real drift to measure, and the pivot and target groups add up to the whole
    assert res["all"]["kl_mean"] > 1e-4
    en, zh = res["languages"]["en"], res["languages"]["zh"]
    assert en["tokens"] + zh["tokens"] == res["all"]["tokens"]
    assert abs((en["kl_mean"] * en["tokens"] + zh["kl_mean"] * zh["tokens"]) / res["all"]["tokens"] - res["all"]["kl_mean"]) < 1e-9
    # against itself a file does not drift
    same = drift.compare(plug_f16, plug_f16, text)
    assert same["all"]["kl_mean"] < 1e-6 and same["all"]["top1"] == 1.0


def test_held_out_rows_are_the_ones_the_run_did_not_train_on(tmp_path, monkeypatch):
    rows, _ = data.sample_rows(PlugSpec("plug", "zh", "en"))
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "rows.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:30]) + "\n")
    run = work / "runs" / "plug-zh"
    run.mkdir(parents=True)
    # training was started from work/: the data path is relative to it
    meta = RunRecord(spec=PlugSpec("plug", "zh", "en"), folder=run,
                     config={"data": "data/rows.jsonl", "max_train_samples": 20})
    monkeypatch.chdir(tmp_path)
    held, source = drift.held_out_rows(meta, rows=5)
    assert [r["id"] for r in held] == [r["id"] for r in rows[25:30]]
    assert "not trained on" in source and "rows 25-29" in source
    convs, calib_source = imatrix.run_conversations(meta)
    assert len(convs) == 20 and "trained on" in calib_source
    trained_users = {c[1]["content"] for c in convs}
    assert not trained_users & {r["prompt"][-1]["content"] for r in held}
    # every row trained on: the shipped sample, and the report says so
    meta.config["max_train_samples"] = None
    _, source = drift.held_out_rows(meta, rows=5)
    assert "trained on every row" in source
    # a rows file given by the user comes first
    _, source = drift.held_out_rows(meta, rows=3, file=work / "data" / "rows.jsonl")
    assert source.startswith(str(work / "data" / "rows.jsonl"))


def test_fallbacks_counted_where_rows_are_not_256_wide(plug_f16, tiny_256_f16, tmp_path):
    narrow = convert.quantize(plug_f16, tmp_path / "n.gguf", "Q4_K_M")  # hidden 64
    wide = convert.quantize(tiny_256_f16, tmp_path / "w.gguf", "Q4_K_M")
    n, w = drift.tensor_summary(narrow, "Q4_K_M"), drift.tensor_summary(wide, "Q4_K_M")
    assert n["fallbacks"] == n["quantized_tensors"] > 0
    assert set(n["fallback_types"]) <= {"Q5_0", "Q5_1", "Q8_0", "Q4_0", "Q4_1", "IQ4_NL"}
    assert w["fallbacks"] == 0 and w["quantized_tensors"] > 0
    assert drift.tensor_summary(tiny_256_f16, "F16")["bits_per_weight"] == pytest.approx(16, abs=0.5)
    assert w["bits_per_weight"] < 7


def test_strict_drift_fails_on_a_file_made_to_drift_and_passes_q8_0(llama_tools, tiny_256_f16, tmp_path):
    rows, _ = data.sample_rows(PlugSpec("plug", "zh", "en"))
    text = drift.prepare(rows[-4:], tiny_256_f16, fmt="plug", target="zh", pivot="en", source="test")
    convs = [list(r["prompt"]) + list(r["completion"]) for r in rows[:16]]
    calib, tokens = imatrix.calibration_text(convs, tiny_256_f16)
    mat = imatrix.make(tiny_256_f16, calib, tmp_path / "im.gguf", source="test rows", tokens=tokens, ctx=256)
    files = {"Q8_0": convert.quantize(tiny_256_f16, tmp_path / "q8.gguf", "Q8_0"),
             "Q2_K": convert.quantize(tiny_256_f16, tmp_path / "q2.gguf", "Q2_K", imatrix=mat["file"])}
    res = drift.compare_many(tiny_256_f16, files, text)
    kl8, kl2 = (res[k]["languages"]["zh"]["kl_mean"] for k in ("Q8_0", "Q2_K"))
    assert kl2 > 20 * kl8
    limit = math.sqrt(kl2 * kl8)
    warnings = drift.check(res, target="zh", max_drift=limit)
    assert len(warnings) == 1 and warnings[0].startswith("Q2_K")
    with pytest.raises(UserError, match="Q2_K.*strict-drift"):
        drift.check(res, target="zh", max_drift=limit, strict=True)
    assert drift.check({"Q8_0": res["Q8_0"]}, target="zh", max_drift=limit, strict=True) == []
    sizes = {k: p.stat().st_size for k, p in files.items()}
    assert drift.recommend(res, sizes, target="zh", max_drift=limit) == "Q8_0"
    assert drift.recommend(res, sizes, target="zh", max_drift=2 * kl2) == "Q2_K"  # smaller, now within
    assert drift.recommend(res, sizes, target="zh", max_drift=kl8 / 2) is None
    # the typed report: the same figures, the reference recommended when no file is within
    rep = drift.report("F16", tiny_256_f16, files, text, max_drift=limit, strict=True)
    assert rep.files["Q2_K"].kl("zh") == pytest.approx(kl2) and rep.files["Q8_0"].kl("zh") == pytest.approx(kl8, abs=1e-6)
    assert rep.recommended == "Q8_0" and len(rep.warnings) == 1 and rep.strict
    assert rep.files["Q2_K"].bits_per_weight < rep.files["Q8_0"].bits_per_weight < 16
    assert DriftReport.from_dict(json.loads(json.dumps(rep.to_dict())), "test") == rep
    table = drift.table(rep)
    assert "zh (target)" in table and "en (pivot)" in table and table.count("\n") == 4  # caption, head, 3 files
    assert "Q8_0 (recommended)" in table
    none_within = drift.report("F16", tiny_256_f16, files, text, max_drift=kl8 / 2)
    assert none_within.recommended == "F16" and len(none_within.warnings) == 2  # the reference has no drift
    md = drift.markdown(none_within)
    assert sum(line.startswith("| F16 (recommended) |") for line in md) == 1 and len(md) == 2 + 2 + 3
