"""Export step 1, merge: the NF4-aware merge of a QLoRA run (plug_lite/export/merging.py)."""

from __future__ import annotations

import json

from export_run import make_run
from plug_lite import export, runs


def test_qlora_merge_into_nf4_rounded_base_is_closer_to_the_4bit_model(tmp_path, tiny_model_256):
    """The adapter of a QLoRA run saw NF4-rounded base weights; merging into the NF4 round trip
    reproduces the 4-bit adapter model's logits far better than merging into the original weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    run = make_run(tmp_path / "run", tiny_model_256, qlora=True)
    rec = runs.RunRecord.load(run, adapter=True)
    nf4_dir = export.merge(rec, out_dir=tmp_path / "nf4")
    plain_dir = export.merge(rec, out_dir=tmp_path / "plain", plain=True)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32)
    q_model = AutoModelForCausalLM.from_pretrained(str(tiny_model_256), quantization_config=bnb, device_map="cpu", dtype=torch.float32)
    q_model = PeftModel.from_pretrained(q_model, str(run / "adapter"))
    tok = AutoTokenizer.from_pretrained(str(tiny_model_256))
    x = tok(["请用三句话介绍一下长城。 Describe the sea in three sentences."], return_tensors="pt")["input_ids"]
    diffs = {}
    with torch.no_grad():
        ref = q_model(x).logits
        for name, d in (("nf4", nf4_dir), ("plain", plain_dir)):
            logits = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)(x).logits
            diffs[name] = (logits - ref).abs().mean().item()
    # measured: nf4 ~0.0016, plain ~0.048 mean |Δlogit|
    assert diffs["nf4"] < diffs["plain"] / 5, diffs
    assert json.loads((nf4_dir / "plug_merge.json").read_text())["stamp"]["mode"] == "nf4"
