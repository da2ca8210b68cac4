"""Build a plug-lite run directory by hand (what plug_lite.train writes) for the export/share tests:
a PEFT LoRA (r=8, all-linear) on a tiny Qwen2 with non-zero random lora_B, the tokenizer with its
inference template, and plug_run.json. Also runs the whole export chain once per test session."""

from __future__ import annotations

import json
from pathlib import Path


def make_run(run: Path, base: Path, *, qlora: bool = False, scale: float = 0.05, fmt: str = "plug",
             target: str = "zh", seed: int = 1) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(target_modules="all-linear", r=8, lora_alpha=16))
    with torch.no_grad():  # lora_B starts at zero: perturb it so the delta is non-zero
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, scale)
    peft_model.save_pretrained(str(run / "adapter"))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(run / "tokenizer"))
    meta = {
        "plug_lite_version": "0.1.0", "base_model": str(base), "base_model_path": str(base),
        "base_name": "Qwen2-Tiny", "size_label": "40M", "format": fmt, "target": target,
        "pivot": None if fmt == "mono" else "en", "think": False,
        "backend": "cpu-qlora" if qlora else "cpu", "load_in_4bit": qlora,
        "bnb_4bit": {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"} if qlora else None,
        "chat_template_name": "chatml", "eos_token": "<|im_end|>",
        "config": {"lora_r": 8, "lora_alpha": 16, "epochs": 1, "learning_rate": 2e-4},
        "versions": {"transformers": "4.57.6", "peft": "0.21.2", "trl": "1.16.0"},
        "data_summary": {"rows": 64, "languages": [target]}, "metrics": {"train_loss": 2.5},
    }
    (run / "plug_run.json").write_text(json.dumps(meta, indent=2))
    return run


def exported_chain(root: Path, base: Path) -> tuple[Path, Path, dict]:
    """(run dir, gguf dir, report) of one full export, built once under ``root`` and reused."""
    from plug_lite import export

    run, out = root / "run", root / "gguf"
    done = root / "report.json"
    if done.is_file():
        return run, out, json.loads(done.read_text())
    make_run(run, base)
    # the rows the run "trained" on (the importance matrix) and those it left out (the drift check)
    from plug_lite import data
    from plug_lite.spec import PlugSpec

    rows, _ = data.sample_rows(PlugSpec("plug", "zh", "en"))
    (root / "rows.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:24]))
    meta = json.loads((run / "plug_run.json").read_text())
    meta["config"].update(data=str(root / "rows.jsonl"), max_train_samples=16)
    (run / "plug_run.json").write_text(json.dumps(meta, indent=2))
    report = export.main(run, out_dir=out, quants=["Q8_0", "Q4_K_M"], with_base=True, n_prompts=2, max_new_tokens=16,
                         drift_rows=8).to_dict()
    done.write_text(json.dumps(report))
    return run, out, report
