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
