"""HF model folder -> GGUF with llama.cpp's own converter, and quantization.

The converter runs in place inside the extracted llama.cpp sources (:mod:`plug_lite.toolchain`),
so it uses its own ``gguf-py`` at the runtime's commit. Outputs are written under a temporary
name and renamed; a failed conversion leaves no file under the final name.

Quantizing: in-process with llama-cpp-python's ``llama_model_quantize``, or, with an importance
matrix, with llama.cpp's ``llama-quantize`` program (:func:`plug_lite.toolchain.find_tool`; same
library code, same commit). Types that are poor without an importance matrix
(:func:`needs_imatrix`: the IQ types, Q2_K, Q3_K_S) are refused without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .io import UserError, atomic_path, check_disk_space
from . import toolchain

__all__ = ["QUANT_TYPES", "CONVERTER_TYPES", "BITS", "uses_imatrix", "needs_imatrix", "hf_to_gguf", "lora_to_gguf", "quantize",
           "model_bytes"]

#: Types the converter writes directly.
CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")

#: Types made from an F16/BF16 GGUF, with a one-line note each.
QUANT_TYPES = {
    "Q4_K_M": "~4.8 bits/weight; the usual laptop choice; can erase a small fine-tune of an already-quantized base",
    "Q5_K_M": "~5.7 bits/weight; a little larger than Q4_K_M, closer to F16",
    "Q6_K": "~6.6 bits/weight; close to F16 quality",
    "Q8_0": "8.5 bits/weight; practically lossless; about 1.7x the size of Q4_K_M (less where tensors fall back)",
    "F16": "16 bits/weight; the unquantized reference",
    "Q4_K_S": "~4.6 bits/weight; a little smaller than Q4_K_M",
    "IQ4_XS": "~4.3 bits/weight; needs an importance matrix",
    "Q3_K_M": "~3.9 bits/weight; drifts clearly, most in the target language; use an importance matrix",
    "Q3_K_S": "~3.5 bits/weight; needs an importance matrix",
    "Q2_K": "~3 bits/weight; needs an importance matrix; for experiments",
}

#: Approximate bits per weight of each type (for the disk-space check).
BITS = {"F16": 16.0, "Q8_0": 8.5, "Q6_K": 6.6, "Q5_K_M": 5.7, "Q4_K_M": 4.9, "Q4_K_S": 4.6, "IQ4_XS": 4.3,
        "Q3_K_M": 3.9, "Q3_K_S": 3.5, "Q2_K": 3.0}


def uses_imatrix(qtype: str) -> bool:
    """Whether llama.cpp's quantizer uses an importance matrix for ``qtype`` (Q8_0, F16 and BF16
    are rounded the same with or without one)."""
    return qtype.upper() not in ("F32", "F16", "BF16", "Q8_0")


def needs_imatrix(qtype: str) -> bool:
    """Whether ``qtype`` is refused without an importance matrix: the IQ types and the smallest
    K-quants, which llama.cpp itself only recommends with one."""
    key = qtype.upper()
    return key.startswith("IQ") or key in ("Q2_K", "Q2_K_S", "Q3_K_S")


def model_bytes(model_dir: str | os.PathLike) -> int:
    """Total size of a model folder's weight files."""
    d = Path(model_dir)
    return sum(f.stat().st_size for f in d.glob("*.safetensors")) or sum(f.stat().st_size for f in d.glob("*.bin"))


def _run_script(args: list[str], what: str) -> None:
    src = toolchain.source_dir()
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # PyPI's gguf is older than this converter
    proc = subprocess.run([sys.executable, *args], cwd=src, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [l for l in (proc.stderr or proc.stdout).strip().splitlines() if l.strip()][-1:] or ["no output"]
        raise UserError(f"{what} failed: {tail[0]}")


def hf_to_gguf(model_dir: str | os.PathLike, out_path: str | os.PathLike, *, outtype: str = "f16",
               model_name: str | None = None) -> Path:
    """Convert a transformers model folder (safetensors, tokenizer, chat template) to GGUF."""
    model_dir, out_path = Path(model_dir), Path(out_path)
    if outtype not in CONVERTER_TYPES:
        raise UserError(f"unknown converter type {outtype!r}; expected one of {', '.join(CONVERTER_TYPES)}")
    if not (model_dir / "config.json").exists():
        raise UserError(f"{model_dir}: not a model folder (no config.json)")
    factor = {"f32": 1.0, "f16": 0.5, "bf16": 0.5, "q8_0": 0.27}[outtype]
    check_disk_space(out_path.parent, int(model_bytes(model_dir) * factor), out_path.name)
    script = toolchain.script("convert_hf_to_gguf.py")
    with atomic_path(out_path, suffix=".gguf") as tmp:
        args = [str(script), str(model_dir.resolve()), "--outfile", str(tmp.resolve()), "--outtype", outtype]
        if model_name:
            args += ["--model-name", model_name]
        _run_script(args, f"converting {model_dir} to GGUF")
    return out_path


def lora_to_gguf(adapter_dir: str | os.PathLike, base_dir: str | os.PathLike, out_path: str | os.PathLike,
                 *, outtype: str = "f16") -> Path:
    """Convert a PEFT LoRA adapter to a GGUF adapter (``Llama(..., lora_path=...)``)."""
    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    if not (adapter_dir / "adapter_config.json").exists():
        raise UserError(f"{adapter_dir}: no adapter_config.json (not a LoRA adapter folder)")
    script = toolchain.script("convert_lora_to_gguf.py")
    with atomic_path(out_path, suffix=".gguf") as tmp:
        args = [str(script), str(adapter_dir.resolve()), "--base", str(Path(base_dir).resolve()),
                "--outfile", str(tmp.resolve()), "--outtype", outtype]
        _run_script(args, f"converting the adapter {adapter_dir} to GGUF")
    return out_path


def quantize(src: str | os.PathLike, dst: str | os.PathLike, qtype: str = "Q4_K_M", *, threads: int = 0,
             imatrix: str | os.PathLike | None = None) -> Path:
    """Quantize an F16/BF16/F32 GGUF with llama.cpp: in-process, or with ``llama-quantize`` when
    an importance matrix (``imatrix``, a file ``llama-imatrix`` wrote) is given."""
    src, dst = Path(src), Path(dst)
    key = qtype.upper()
    if key not in QUANT_TYPES:
        raise UserError(f"unknown quant type {qtype!r}; expected one of {', '.join(QUANT_TYPES)}")
    if not src.is_file():
        raise UserError(f"{src}: GGUF not found")
    if imatrix is None and needs_imatrix(key):
        raise UserError(f"{key} needs an importance matrix (quality collapses without one): "
                        "export with --imatrix auto (needs llama.cpp's programs) or pick another type")
    check_disk_space(dst.parent, int(src.stat().st_size * BITS[key] / 16), dst.name)
    if imatrix is not None:
        imatrix = Path(imatrix)
        if not imatrix.is_file():
            raise UserError(f"{imatrix}: importance matrix not found")
        if toolchain.find_tool("llama-quantize") is None:
            raise UserError(f"quantizing {src.name} to {key} with an importance matrix needs llama.cpp's "
                            f"llama-quantize; {toolchain.tools_status()['hint']}")
        with atomic_path(dst, suffix=".gguf") as tmp:
            args = ["--imatrix", str(imatrix), str(src), str(tmp), key]
            toolchain.run_tool("llama-quantize", args + ([str(threads)] if threads else []),
                               what=f"quantizing {src.name} to {key}")
        return dst
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{key}")
    if threads:
        params.nthread = threads
    with atomic_path(dst, suffix=".gguf") as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0:
            raise UserError(f"{src}: quantizing to {key} failed (llama_model_quantize returned {rc})")
    return dst
