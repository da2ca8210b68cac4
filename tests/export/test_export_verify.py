"""Export step 3, verify: the parity report of the export chain (metadata, prompt tokens, greedy
parity of every file and of the adapter GGUF on the base GGUF, the fine-tune visible against the
base; plug_lite/export/verifying.py and its check_*.py)."""

from __future__ import annotations

import json


def test_parity_report(chain):
    run, out, report = chain
    saved = json.loads((run / "export_report.json").read_text())
    assert saved["files"] == report["files"]
    v = report["verify"]
    assert v["checks"]["template"] == v["checks"]["eos"] == v["checks"]["prompt_tokens"] == v["checks"]["stops_at_eos"] == "ok"
    assert v["checks"]["default_system"] == "ok"  # no system message: the trained prompt, token for token
    # what each model ended its answers with, when it did: the stops plug-lite share writes
    for name, st in v["stops"].items():
        ends = st.get("ends", [])  # written when any answer ended
        assert set(ends) <= {"<|im_end|>", "<|endoftext|>"} and bool(ends) == (st["stopped"] > 0), name
    assert v["checks"]["eos_token"] == "<|im_end|>"
    # F16 GGUF greedy text == transformers' merged model
    assert v["greedy"]["F16"]["identical_to_merged"] == v["greedy"]["F16"]["prompts"] == 2
    # adapter GGUF applied on the base GGUF == the merged model
    assert v["greedy"]["adapter_on_base"]["identical_to_merged"] == 2
    # the perturbed LoRA changes greedy text, so "behaves like the base" is measurable
    assert v["fine_tune_visible_on"].startswith("2/2")
    for q in ("Q8_0", "Q4_K_M"):
        assert 0.0 <= v["greedy"][q]["agreement_with_merged"] <= 1.0
        assert "closer_to_base_on" in v["greedy"][q]
    assert report["merge"] == "plain"


def test_a_template_without_the_default_fails_the_check(chain, tmp_path):
    """A GGUF whose template lost the PLUG default (as exported before) fails check 2's second half."""
    import contextlib

    import pytest

    from plug_lite import gguf_meta
    from plug_lite.engine import LlamaEngine
    from plug_lite.export.check_tokens import check_default_system
    from plug_lite.export.prompts import HeldOut, Reference
    from plug_lite.io import UserError
    from plug_lite.runs import RunRecord

    run, out, _ = chain
    rec = RunRecord.load(run)
    ref = Reference.load(rec, run / "merged")
    held = HeldOut.render(rec, ref.tok, 2)
    plain = gguf_meta.write_keys(out / "Qwen2-Tiny-40M-PLUG-zh-F16.gguf", tmp_path / "plain.gguf",
                                 {"tokenizer.chat_template": ref.tok.chat_template})
    with contextlib.closing(LlamaEngine(out / "Qwen2-Tiny-40M-PLUG-zh-F16.gguf", ctx=512, threads=1)) as eng:
        assert check_default_system(eng, out / "x.gguf", held) == "ok"
    with contextlib.closing(LlamaEngine(plain, ctx=512, threads=1)) as eng:
        with pytest.raises(UserError, match="does not render the PLUG system prompt"):
            check_default_system(eng, plain, held)
