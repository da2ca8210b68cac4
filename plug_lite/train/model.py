"""Step 3, the backend and the base model: which backend trains (chosen and printed with the reason),
the base model loaded for it, and the LoRA adapter added (after step 5 decides the turn-token rows).

* ``unsloth`` (FastLanguageModel, 4-bit) when unsloth imports and a CUDA GPU is there;
* ``qlora`` (PEFT + bitsandbytes NF4, double quant, bf16 compute on compute capability >= 8, fp16
  on older cards such as the T4) on any other GPU;
* ``cpu`` (LoRA in fp32) without a GPU; ``cpu-qlora`` (bitsandbytes 4-bit on CPU, fp32 compute)
  when asked for.

Facts relied on (measured, see the project notes): ``Gemma3ForCausalLM.base_model_prefix`` must be
``"model"`` for TRL with transformers 4.57; bitsandbytes 4-bit trains on CPU with fp32 compute.
Unsloth's ``FastLanguageModel.from_pretrained`` / ``get_peft_model`` keyword names are those of its
docs and notebooks (``max_seq_length``, ``load_in_4bit``, ``use_gradient_checkpointing="unsloth"``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..io import UserError
from . import turn_tokens
from .config import BACKENDS, GPU_BACKENDS, TrainConfig

__all__ = ["Backend", "BaseModel", "cuda_capability", "choose_backend", "pick_backend", "resolve_model",
           "describe_base", "load_base", "add_lora", "versions"]


@dataclass(frozen=True)
class Backend:
    """How this run loads and trains the base model."""

    name: str  # unsloth, qlora, cpu or cpu-qlora
    reason: str  # why it was chosen (printed)
    dtype: Any  # the torch compute dtype
    cuda: bool  # whether torch sees a CUDA GPU (whatever the backend)

    @property
    def four_bit(self) -> bool:
        """The base is loaded in 4 bits (bitsandbytes NF4, or Unsloth's)."""
        return self.name in ("unsloth", "qlora", "cpu-qlora")

    @property
    def compute_dtype(self) -> str:
        """The compute dtype's name: float16, bfloat16 or float32."""
        import torch

        names = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}
        return names.get(self.dtype, str(self.dtype))


@dataclass(frozen=True)
class BaseModel:
    """The base model: where it loads from and how the run names it."""

    name: str  # what from_pretrained loads: a hub name or a folder
    local: Path | None  # the folder, resolved; None for a hub name
    base_name: str  # "Qwen2", "Gemma-3" ("-Tiny" under 50M parameters)
    size_label: str  # "270M"
    parameters: int


def cuda_capability() -> tuple[int, int] | None:
    """The CUDA GPU's compute capability, or None when torch sees no CUDA GPU."""
    import torch

    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def pick_backend(requested: str, capability: tuple[int, int] | None) -> Backend:
    """The backend for ``--backend`` on this machine, with its compute dtype."""
    import torch

    name, reason = choose_backend(requested, cuda=capability is not None)
    if name in GPU_BACKENDS:
        dtype = torch.bfloat16 if capability and capability[0] >= 8 else torch.float16
    else:
        dtype = torch.float32
    return Backend(name, reason, dtype, cuda=capability is not None)


def describe_base(name: str, local: Path | None, *, trust_remote_code: bool) -> BaseModel:
    """The base model ``name`` (from :func:`resolve_model`), named and counted on the meta device."""
    base_name, size_label, n, _ = _describe_model(name, trust_remote_code)
    return BaseModel(name, local, base_name, size_label, n)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model(model: str) -> tuple[str, Path | None]:
    """(name to load, local folder or None for a hub name). Unknown local paths are errors."""
    if model == "default":
        try:
            from .. import gemma
        except ImportError:
            raise UserError(
                '--model default needs plug_lite.gemma (the embedded Gemma-3-270M), which is not in this '
                "install; pass --model with a hub name or a local folder"
            ) from None
        path = Path(gemma.default_model_dir())
        return str(path), path
    p = Path(model).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise UserError(f"{p}: not a model folder (no config.json)")
        if not any(p.glob("*.safetensors")):
            raise UserError(f"{p}: no *.safetensors weights (plug_lite loads safetensors only)")
        return str(p), p.resolve()
    if _HUB_ID.match(model) and model.count("/") <= 1 and not model.startswith((".", "~")):
        return model, None
    raise UserError(f"{model}: model folder not found (and not a hub name such as Qwen/Qwen2.5-0.5B-Instruct)")


def choose_backend(requested: str, *, cuda: bool) -> tuple[str, str]:
    """(backend, reason). A GPU backend without a GPU is a :class:`UserError`."""
    if requested not in BACKENDS:
        raise UserError(f"unknown backend {requested!r}; expected one of {', '.join(BACKENDS)}")
    if requested in GPU_BACKENDS and not cuda:
        raise UserError(f"backend {requested!r} needs a CUDA GPU and none is visible to torch; use --backend cpu or cpu-qlora")
    if requested == "unsloth":
        ok, why = _unsloth_available()
        if not ok:
            raise UserError(f"backend 'unsloth' is not usable: {why}")
        return "unsloth", "asked for with --backend"
    if requested != "auto":
        return requested, "asked for with --backend"
    if not cuda:
        return "cpu", "no CUDA GPU: LoRA in fp32 on CPU (unsloth skipped: it needs a GPU; --backend cpu-qlora for 4-bit)"
    ok, why = _unsloth_available()
    if ok:
        return "unsloth", "CUDA GPU and unsloth installed"
    return "qlora", f"CUDA GPU; unsloth skipped ({why})"


def _unsloth_available() -> tuple[bool, str]:
    import importlib.util

    if importlib.util.find_spec("unsloth") is None:
        return False, "not installed: pip install 'plug-lite[unsloth]'"
    try:
        import unsloth  # noqa: F401  (must be imported before transformers to patch it)
    except Exception as e:  # a broken install (e.g. torchvision mismatch) must not stop training
        return False, f"import failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return True, ""


def _size_label(n: int) -> str:
    """Parameter count with two significant figures: 268_098_176 -> "270M"."""
    from math import floor, log10

    if n <= 0:
        return "?"
    rounded = round(n, -int(floor(log10(n))) + 1)
    if rounded >= 1e9:
        return f"{rounded / 1e9:g}B"
    return f"{rounded / 1e6:g}M"


_PRETTY = {"qwen2": "Qwen2", "qwen3": "Qwen3", "gemma3_text": "Gemma-3", "gemma3": "Gemma-3", "gemma2": "Gemma-2",
           "gemma": "Gemma", "llama": "Llama", "mistral": "Mistral", "phi3": "Phi-3", "smollm3": "SmolLM3"}


def _describe_model(name: str, trust_remote_code: bool) -> tuple[str, str, int, str]:
    """(base_name, size_label, parameter count, model_type), counted on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    n = sum(p.numel() for p in m.parameters())
    mt = getattr(config, "model_type", "") or ""
    base = _PRETTY.get(mt, mt.capitalize() or "Model")
    if n < 50e6:
        base += "-Tiny"
    return base, _size_label(n), n, mt


def versions() -> dict[str, str | None]:
    """The versions of the libraries that train (None: not installed), and plug_lite's."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "trl", "peft", "bitsandbytes", "unsloth"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["plug_lite"] = __version__
    return out


def _is_gemma3(model) -> bool:
    return getattr(model.config, "model_type", "") in ("gemma3", "gemma3_text")


def _lora_targets(spec: str) -> str | list[str]:
    return "all-linear" if spec == "all-linear" else [s.strip() for s in spec.split(",") if s.strip()]


def load_base(cfg: TrainConfig, name: str, backend: str, dtype):
    """(base model, tokenizer) for the backend, before any adapter is added."""
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=name,
            max_seq_length=cfg.max_length,
            dtype=dtype,
            load_in_4bit=True,
            trust_remote_code=cfg.trust_remote_code,
        )
        if _is_gemma3(model):
            model.base_model_prefix = "model"
        return model, tokenizer

    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    kwargs: dict[str, Any] = dict(trust_remote_code=cfg.trust_remote_code, use_safetensors=True, dtype=dtype)
    if backend in ("qlora", "cpu-qlora"):
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        # one process per GPU under `accelerate launch`: each loads its copy on its own device
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))} if backend == "qlora" else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if _is_gemma3(model):
        # TRL + transformers 4.57: Gemma3ForCausalLM says "language_model" but its backbone is `model`.
        model.base_model_prefix = "model"
    return model, tokenizer


def add_lora(model, cfg: TrainConfig, backend: str, token_plan: turn_tokens.TokenPlan | None = None):
    """The PEFT model: LoRA on ``cfg.target_modules``, plus the embedding / output rows of the
    turn tokens in ``token_plan`` (PEFT trainable tokens)."""
    trainable_tokens = turn_tokens.peft_indices(model, token_plan.ids) if token_plan else None
    extra = {"trainable_token_indices": trainable_tokens} if trainable_tokens else {}
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        targets = _lora_targets(cfg.target_modules)
        if targets == "all-linear":  # unsloth wants names
            targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        return FastLanguageModel.get_peft_model(
            model,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            bias="none",
            use_gradient_checkpointing="unsloth" if cfg.gradient_checkpointing else False,
            random_state=cfg.seed,
            **extra,  # unsloth passes unknown keywords on to peft.LoraConfig
        )

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if backend in ("qlora", "cpu-qlora"):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(cfg.gradient_checkpointing))
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=_lora_targets(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        **extra,
    )
    return get_peft_model(model, lora)

