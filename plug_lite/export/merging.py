"""Step 1, merge: the run's LoRA adapter added into a copy of its base model, on the CPU.

The arithmetic is done in float32 when an fp32 copy fits in 40% of the RAM (else in the base's
16-bit dtype); the merged model is saved in the base checkpoint's dtype (bf16 or fp16; a float32
base stays float32). For a QLoRA run (``load_in_4bit``) the adapter was trained against
NF4-rounded base weights, so by default the base Linear weights first go through the same NF4
quantize -> dequantize round trip as in training (:func:`nf4_round_trip`); ``plain=True`` adds the
delta to the original weights instead. Nothing is ever merged into 4-bit weights.

Output: ``RUN_DIR/merged/`` (safetensors, the run's tokenizer, ``plug_merge.json`` with how it was
made), written under a temporary name and renamed. A second export reuses a merge made the same
way from the same adapter.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .. import convert
from ..io import check_disk_space, write_json
from ..runs import FourBit, RunRecord, resolve_base

__all__ = ["merge", "nf4_round_trip", "merge_mode", "MERGE_FILE"]

#: Written into the merged folder: how it was made (``stamp``), from which base, in which dtype.
MERGE_FILE = "plug_merge.json"


def _torch_dtype_of(base: Path):
    import torch

    cfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    name = cfg.get("torch_dtype") or cfg.get("dtype") or (cfg.get("text_config") or {}).get("torch_dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(name), torch.float32)


def nf4_round_trip(model, bnb_4bit: FourBit) -> int:
    """Replace every Linear weight that bitsandbytes quantizes (all but the output head) with its
    NF4 quantize -> dequantize round trip, as the QLoRA adapter saw it. Returns the count."""
    import torch
    from bitsandbytes import functional as bnbf

    quant_type, double = bnb_4bit.quant_type, bnb_4bit.double_quant
    head = model.get_output_embeddings()
    n = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if not isinstance(mod, torch.nn.Linear) or mod is head or name.split(".")[-1] == "lm_head":
                continue
            w = mod.weight.data
            # Params4bit defaults: blocksize 64; compress_statistics = double quantization.
            q, state = bnbf.quantize_4bit(w.contiguous(), blocksize=64, compress_statistics=double, quant_type=quant_type)
            mod.weight.data = bnbf.dequantize_4bit(q, state).to(w.dtype).reshape(w.shape)
            n += 1
    return n


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _replace_dir(tmp: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _save(model, tok, out: Path, record: dict) -> None:
    """The merged model and tokenizer saved into ``out`` through a temporary folder beside it."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent if out.parent.exists() else None))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        write_json(tmp / MERGE_FILE, record)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def merge(rec: RunRecord, *, out_dir: str | os.PathLike | None = None, plain: bool = False) -> Path:
    """Merge the run's adapter into a 16-bit (or fp32) copy of its base; returns the folder.
    Reuses an existing merge made the same way from the same adapter."""
    run = rec.folder
    out = Path(out_dir) if out_dir else run / "merged"
    qlora = bool(rec.load_in_4bit)
    mode = "nf4" if qlora and not plain else "plain"
    adapter_file = run / "adapter" / "adapter_model.safetensors"
    stamp = {"mode": mode, "adapter_mtime": adapter_file.stat().st_mtime, "adapter_size": adapter_file.stat().st_size}
    marker = out / MERGE_FILE
    if marker.is_file() and json.loads(marker.read_text()).get("stamp") == stamp:
        print(f"merge: reusing {out}", file=sys.stderr)
        return out
    base = resolve_base(rec)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    save_dtype = _torch_dtype_of(base)
    n_bytes = convert.model_bytes(base)
    check_disk_space(out.parent, int(n_bytes * (2 if save_dtype == torch.float32 else 1)), "the merged model")
    # float32 arithmetic when an fp32 copy fits in 40% of the RAM (models up to a few billion
    # parameters on Colab); otherwise the base's own 16-bit dtype, as PEFT merges on a GPU.
    fp32_bytes = n_bytes * (1 if save_dtype == torch.float32 else 2)
    work_dtype = torch.float32 if fp32_bytes < 0.4 * _ram_bytes() else save_dtype
    t0 = time.time()
    print(f"merge: loading {base} ({_dtype_name(work_dtype)}, CPU)"
          f"{' and NF4-rounding its Linear weights' if mode == 'nf4' else ''}", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=work_dtype, device_map="cpu")
    if mode == "nf4":
        nf4_round_trip(model, rec.bnb_4bit or FourBit())
    model = PeftModel.from_pretrained(model, str(run / "adapter"))
    model = model.merge_and_unload()
    model = model.to(save_dtype)
    tok_dir = run / "tokenizer" if (run / "tokenizer").is_dir() else base
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    _save(model, tok, out, {"stamp": stamp, "base": str(base), "dtype": _dtype_name(save_dtype)})
    print(f"merge: {mode} merge saved to {out} ({_dtype_name(save_dtype)}, {time.time() - t0:.1f} s)", file=sys.stderr)
    return out


def merge_mode(merged: Path) -> str:
    """How a merged folder was made: ``nf4`` or ``plain``."""
    return json.loads((merged / MERGE_FILE).read_text())["stamp"]["mode"]
