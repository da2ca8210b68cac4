"""``plug-lite train``: LoRA / QLoRA supervised fine-tuning on PLUG rows with TRL (Unsloth when present).

Input: a JSONL of TRL prompt-completion rows (``plug-lite data`` writes them)::

    {"id": ..., "prompt": [{"role": "system", ...}, {"role": "user", ...}],
     "completion": [{"role": "assistant", "content": ...}], "format": "plug", "target": "zh", "pivot": "en"}

or ``--data sample``: rows built from the shipped sample for ``--target`` / ``--format``.

Run it::

    plug-lite train --data rows.jsonl --model Qwen/Qwen2.5-0.5B-Instruct --preset t4
    plug-lite train --config configs/cpu-demo.yaml --max-steps 10      # flags override the file
    python -m plug_lite.train --help                                    # every TrainConfig field

Multi-GPU (data parallel) is accelerate's job, not ours::

    accelerate launch -m plug_lite.train --config configs/t4-qlora.yaml

What happens, top to bottom:

1. The config: :class:`TrainConfig` defaults < ``--config FILE.yaml`` < flags; then the preset
   (``t4``, ``ampere``, ``cpu-demo``, ``cpu-tiny``) fills every field left unset.
2. The backend, chosen and printed with the reason: ``unsloth`` (FastLanguageModel, 4-bit) when
   unsloth imports and a CUDA GPU is there; ``qlora`` (PEFT + bitsandbytes NF4, double quant,
   bf16 compute on compute capability >= 8, fp16 on older cards such as the T4) on any other GPU;
   ``cpu`` (LoRA in fp32) without a GPU; ``cpu-qlora`` (bitsandbytes 4-bit on CPU, fp32 compute)
   when asked for.
3. The chat template: the base model's own; for a base model without one, ``templates.CHATML``
   (or ``--chat-template gemma``). The end-of-turn token the template writes after an assistant
   turn (``<|im_end|>``, ``<end_of_turn>``) becomes the EOS the model learns to stop on.
4. Loss mask: TRL 1.16 trains conversational prompt-completion rows on the completion only. The
   rows are tokenized by the trainer itself; we read its processed dataset, print a preview of the
   mask (trained text in ``[[...]]``, green on a terminal) and refuse to train when a row trains
   nothing, when its end-of-turn token is not trained, when padding would mask it, or when
   ``max_length`` would cut the target-language section of a PLUG row (found with
   :func:`plug_lite.formats.parse`).
5. Training with checkpoints every ``save_steps`` (``--resume`` continues from the last one);
   loss, tokens/s and peak memory go to ``metrics.jsonl``.
6. The run folder (``plug-lite export`` reads it)::

       run/plug_run.json   written last: its presence means the run finished
       run/adapter/        PEFT adapter (safetensors)
       run/tokenizer/      tokenizer + the inference chat template
       run/config.yaml     the resolved TrainConfig
       run/metrics.jsonl   one line per logging step
       run/checkpoints/    trainer checkpoints (for --resume)

Facts this module relies on (measured, see the project notes): TRL 1.16 completion-only loss by
default for prompt-completion rows; ``Gemma3ForCausalLM.base_model_prefix`` must be ``"model"``
for TRL with transformers 4.57; bitsandbytes 4-bit trains on CPU with fp32 compute. Unsloth's
``FastLanguageModel.from_pretrained`` / ``get_peft_model`` keyword names are those of its docs and
notebooks (``max_seq_length``, ``load_in_4bit``, ``use_gradient_checkpointing="unsloth"``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__, formats, runs, templates
from ..cli import add_arguments, dataclass_params, value_type
from ..io import JsonlAppender, UserError, read_records, run_cli, write_json, atomic_write_text
from ..spec import FORMATS, PlugSpec
from . import batching, turn_tokens

__all__ = ["TrainConfig", "PRESETS", "BACKENDS", "Prepared", "prepare", "train", "main", "cli", "load_config", "choose_backend"]

BACKENDS = ("auto", "unsloth", "qlora", "cpu", "cpu-qlora")
GPU_BACKENDS = ("unsloth", "qlora")


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything one training run needs. ``None`` means "from the preset"."""

    model: str = _f("default", 'base model: hub name, local folder, or "default" (the embedded Gemma-3-270M)')
    data: str = _f("sample", 'JSONL of prompt-completion rows, or "sample" (shipped sample rows for --target/--format)')
    target: str = _f("zh", "target language code (used by --data sample and the run metadata)")
    format: str = _f("plug", "answer format: plug, mono or pivot_only (used by --data sample)")
    pivot: str = _f("en", "pivot language code")
    think: bool = _f(False, "PLUG think variant: pivot sections inside <think>...</think> (used by --data sample)")
    preset: str = _f("auto", "auto, t4, ampere, cpu-demo or cpu-tiny (fills every field left unset)")
    backend: str = _f("auto", "auto, unsloth, qlora, cpu or cpu-qlora")
    output_dir: str | None = _f(None, "run folder (default runs/<name>)")
    name: str | None = _f(None, "run name (default <model>-<format>-<target>)")
    max_steps: int | None = _f(None, "optimizer steps; -1 means run --epochs epochs")
    epochs: float = _f(1.0, "epochs when --max-steps is -1")
    lr: float | None = _f(None, "peak learning rate (linear decay, short warm-up); presets: 2e-4, cpu-demo 1e-3")
    seed: int = _f(0, "random seed (data order, LoRA init)")
    batch_size: int | None = _f(None, "rows per device per step")
    grad_accum: int | None = _f(None, "gradient accumulation steps")
    max_length: int | None = _f(None, "tokens per row; longer rows are truncated (refused when the target section would be cut)")
    gradient_checkpointing: bool | None = _f(None, "trade compute for memory")
    max_train_samples: int | None = _f(None, "use at most this many rows (the first ones)")
    drop_long_rows: bool | None = _f(None, "drop rows longer than --max-length instead of truncating them")
    packing: bool | None = _f(None, "pack rows into padding-free sequences of --max-length tokens, so a micro-batch holds "
                                    "about batch-size x max-length real tokens (presets: on for t4/ampere, off on CPU)")
    group_by_tokens: bool | None = _f(None, "rows not packed (--no-packing, or a model whose attention would mix packed rows): "
                                            "micro-batches of length-grouped rows up to batch-size x max-length padded "
                                            "tokens, instead of batch-size rows (presets: on for t4/ampere, off on CPU)")
    lora_r: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha")
    lora_dropout: float = _f(0.05, "LoRA dropout")
    target_modules: str = _f("all-linear", 'LoRA target modules: "all-linear" or a comma-separated list')
    save_steps: int | None = _f(None, "checkpoint every N steps")
    logging_steps: int = _f(1, "log loss / tokens per second every N steps")
    preview_rows: int = _f(2, "rows whose loss mask is printed before training")
    chat_template: str = _f("chatml", "template (name in plug_lite.templates) for a model that has none")
    turn_tokens: str = _f("auto", "train the embedding/output rows of the chat template's turn tokens: auto (those that "
                                  "look untrained in the base, e.g. <end_of_turn> of a base Gemma), all, or none")
    resume: bool = _f(False, "continue from the last checkpoint in the run folder")
    trust_remote_code: bool = _f(False, "allow model code from the hub (off by default)")


#: Preset values for the fields a user left unset. ``load_in_4bit`` / ``dtype`` are read by the backend.
PRESETS: dict[str, dict[str, Any]] = {
    # 16 GB T4 (Colab free): fp16 compute, 4-bit base, checkpointing; rows packed into 2048-token
    # sequences, 1 per micro-batch x 8: up to 16k tokens (~60 PLUG rows) per optimizer step.
    "t4": dict(lr=2e-4, max_length=2048, batch_size=1, grad_accum=8, gradient_checkpointing=True, max_steps=-1,
               save_steps=100, packing=True, group_by_tokens=True),
    # Ampere or newer (A100, L4, RTX 30xx/40xx, H100): bf16 compute, 4-bit base; 4 packed sequences
    # per micro-batch x 2: the same 16k tokens per optimizer step in fuller micro-batches.
    "ampere": dict(lr=2e-4, max_length=2048, batch_size=4, grad_accum=2, gradient_checkpointing=True, max_steps=-1,
                   save_steps=100, packing=True, group_by_tokens=True),
    # 2 CPU cores, embedded Gemma-3-270M, fp32 LoRA (+ its untrained turn-token rows), short rows,
    # 60 steps (2-4 minutes of training). lr 1e-3: with 2e-4 the loss barely moved in 40 steps.
    # 60 steps over the demo's 48 rows (2.5 epochs): the mono model ended 19 of 20 zh answers by
    # itself, against 15 of 20 after 40 steps and 10 of 20 after 40 steps over 80 rows (RESULTS.md).
    "cpu-demo": dict(model="default", lr=1e-3, max_length=256, batch_size=2, grad_accum=1, gradient_checkpointing=False,
                     max_steps=60, save_steps=20, max_train_samples=80, drop_long_rows=True, packing=False,
                     group_by_tokens=False),
    # Tests: a tiny model, a few steps.
    "cpu-tiny": dict(lr=2e-4, max_length=256, batch_size=2, grad_accum=1, gradient_checkpointing=False, max_steps=4, save_steps=2,
                     packing=False, group_by_tokens=False),
}
#: The preset to suggest after a CUDA out-of-memory error.
SMALLER = {"ampere": "t4", "t4": "t4 with --max-length 1024"}


# --------------------------------------------------------------------------------------------
# Configuration: dataclass <- YAML file <- flags


def build_parser() -> argparse.ArgumentParser:
    """Flags generated from :class:`TrainConfig` (defaults suppressed, so only given flags override)."""
    p = argparse.ArgumentParser(prog="plug-lite train",
                                description="LoRA / QLoRA SFT of PLUG rows with TRL (Unsloth when present).")
    p.add_argument("--config", default=argparse.SUPPRESS, help="YAML file with TrainConfig fields (flags override it)")
    add_arguments(p, dataclass_params(TrainConfig), suppress=True)
    return p


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig defaults, then the YAML file, then ``overrides``."""
    values: dict[str, Any] = {}
    names = {p.name: p for p in dataclass_params(TrainConfig)}
    if path:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise UserError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise UserError(f"{p}: bad YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise UserError(f"{p}: expected a mapping of TrainConfig fields")
        for key, value in data.items():
            k = str(key).replace("-", "_")
            if k not in names:
                raise UserError(f"{p}: unknown field {key!r}; known: {', '.join(names)}")
            typ = value_type(names[k].type)[0]
            if value is not None and typ in (int, float) and not isinstance(value, (int, float)):
                raise UserError(f"{p}: field {key!r} must be a number, got {value!r}")
            values[k] = typ(value) if value is not None and typ is not str else value
    values.update(overrides)
    return TrainConfig(**values)


def resolve(cfg: TrainConfig, *, cuda_capability: tuple[int, int] | None) -> tuple[TrainConfig, str]:
    """Fill the fields left unset from the preset ("auto": by the hardware). Returns (config, preset)."""
    preset = cfg.preset
    if preset == "auto":
        preset = "cpu-demo" if cuda_capability is None else ("ampere" if cuda_capability[0] >= 8 else "t4")
    if preset not in PRESETS:
        raise UserError(f"unknown preset {cfg.preset!r}; expected auto or one of {', '.join(PRESETS)}")
    values = dataclasses.asdict(cfg)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key, value in PRESETS[preset].items():
        if values[key] is None or (key == "model" and values[key] == defaults["model"]):
            values[key] = value
    values["max_steps"] = -1 if values["max_steps"] is None else values["max_steps"]
    values["save_steps"] = values["save_steps"] or 50
    values["preset"] = preset
    return TrainConfig(**values), preset


# --------------------------------------------------------------------------------------------
# Data


def _check_rows(rows: list[dict], where: str) -> list[dict]:
    """Structural checks of prompt-completion rows; one-line errors naming the row and field."""
    out = []
    for i, r in enumerate(rows):
        loc = r.get("_where") or f"{where}: row {i}"
        for key in ("prompt", "completion"):
            v = r.get(key)
            if not isinstance(v, list) or not v or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in v
            ):
                raise UserError(f"{loc}: field {key!r} must be a non-empty list of {{'role', 'content'}} messages")
        if r["completion"][-1]["role"] != "assistant":
            raise UserError(f"{loc}: field 'completion' must end with an assistant message")
        out.append(
            {
                "id": str(r.get("id", i)),
                "prompt": [{"role": m["role"], "content": m["content"]} for m in r["prompt"]],
                "completion": [{"role": m["role"], "content": m["content"]} for m in r["completion"]],
                "format": str(r.get("format") or ""),
                "target": str(r.get("target") or ""),
                "pivot": str(r.get("pivot") or ""),
                "think": bool(r.get("think")) or formats.THINK_OPEN in r["completion"][-1]["content"][:20],
            }
        )
    return out


def load_rows(cfg: TrainConfig) -> tuple[list[dict], dict]:
    """(rows, data summary) from ``cfg.data``: a JSONL file or ``sample``."""
    if cfg.data == "sample":
        try:
            from .. import data as plug_data
        except ImportError:
            raise UserError("--data sample needs plug_lite.data, which is not in this install; pass --data ROWS.jsonl") from None
        rows, summary = plug_data.sample_rows(PlugSpec(cfg.format, cfg.target, cfg.pivot, cfg.think))
        source = f"sample ({cfg.format}, {cfg.target})"
    else:
        path = Path(cfg.data)
        rows = read_records(path, required=("prompt", "completion"))
        summary, source = {}, str(path)
    if not rows:
        raise UserError(f"{source}: no rows")
    rows = _check_rows(rows, source)
    n_all = len(rows)
    if cfg.max_train_samples is not None:
        rows = rows[: max(1, cfg.max_train_samples)]
    summary = dict(summary or {})
    summary.update(source=source, rows_available=n_all, rows_used=len(rows))
    return rows, summary


# --------------------------------------------------------------------------------------------
# Model, backend


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


def _versions() -> dict[str, str | None]:
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


def _counting_trainer(base, *, own_loss: bool):
    """``base`` (TRL's SFTTrainer) that counts the tokens it sees and the tokens it trains (all
    processes), for tokens/s and trained tokens/s in metrics.jsonl whatever the TRL version.

    ``own_loss``: compute the loss through the model's own forward. TRL's fused LM head multiplies
    the hidden states by ``lm_head.weight`` itself; with trained turn-token rows that weight is
    PEFT's full merged copy, so autograd would form the gradient of the whole head. The model's own
    forward goes through :func:`turn_tokens.cheap_row_gradients` instead (same loss; TRL's entropy /
    token-accuracy logs are then not computed)."""
    import torch
    from transformers import Trainer

    class PlugSFTTrainer(base):
        plug_tokens = 0
        plug_trained_tokens = 0
        plug_batches = None  # a batching.TokenBudgetBatches: micro-batches by tokens

        def get_train_dataloader(self):
            if self.plug_batches is None:
                return super().get_train_dataloader()
            from torch.utils.data import DataLoader

            dataset = self._remove_unused_columns(self.train_dataset, description="Training")
            return self.accelerator.prepare(DataLoader(
                dataset, batch_sampler=self.plug_batches, collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                if "attention_mask" in inputs:
                    seen = inputs["attention_mask"].sum()
                else:  # padding-free: one flat sequence
                    seen = torch.tensor(inputs["input_ids"].numel(), device=inputs["input_ids"].device)
                trained = (inputs["labels"][..., 1:] != -100).sum() if "labels" in inputs else seen * 0
                counts = self.accelerator.gather(torch.stack([seen, trained]).reshape(1, 2)).sum(0)
                self.plug_tokens += int(counts[0])
                self.plug_trained_tokens += int(counts[1])
            if own_loss:
                inputs = {**inputs, "use_cache": False}
                return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    return PlugSFTTrainer


def _sft_config(cls, **kw):
    """``cls(**kw)`` (TRL's SFTConfig) with the arguments this transformers / TRL accepts.

    transformers 5 removed ``warmup_ratio``: there a float ``warmup_steps`` below 1 is the ratio.
    ``group_by_length`` is passed only when true. Anything else unknown is an error naming the versions."""
    names = {f.name for f in dataclasses.fields(cls)}
    ratio = kw.pop("warmup_ratio", None)
    if ratio is not None:
        kw["warmup_ratio" if "warmup_ratio" in names else "warmup_steps"] = ratio
    if not kw.get("group_by_length"):
        kw.pop("group_by_length", None)
    unknown = sorted(k for k in kw if k not in names)
    if unknown:
        v = _versions()
        raise UserError(f"TRL {v['trl']} / transformers {v['transformers']}: SFTConfig has no {', '.join(unknown)}; "
                        "use the versions in constraints.txt")
    return cls(**kw)


# --------------------------------------------------------------------------------------------
# Chat template and end-of-turn token

_PROBE = "PLUGLITEPROBE"


def _strip_generation_markers(template: str) -> str:
    """A template without ``{% generation %}`` / ``{% endgeneration %}`` (training-only markers)."""
    return re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", template)


def setup_chat_template(tokenizer, fallback: str) -> str | None:
    """Give the tokenizer an inference chat template; returns its registry name (or None)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = templates.get(fallback)
        print(f"chat template: the model has none; using plug_lite.templates.{fallback.upper()}")
    if "generation" in tokenizer.chat_template and re.search(r"\{%-?\s*generation", tokenizer.chat_template):
        tokenizer.chat_template = _strip_generation_markers(tokenizer.chat_template)
    return templates.name_of(tokenizer.chat_template)


def end_of_turn_token(tokenizer) -> str:
    """The token the chat template writes right after an assistant message (the EOS to train)."""
    name = templates.name_of(tokenizer.chat_template)
    if name:
        return templates.STOP[name]
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    after = text[text.rfind(_PROBE) + len(_PROBE):] if _PROBE in text else ""
    specials = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}) or {})
    if tokenizer.eos_token and tokenizer.eos_token in after:
        first = min(((after.find(s), s) for s in specials if s and s in after), default=(None, None))[1]
        return first or tokenizer.eos_token
    hits = sorted((after.find(s), -len(s), s) for s in specials if s and s in after)
    if hits:
        return hits[0][2]
    return tokenizer.eos_token  # the mask check then fails with a clear message


# --------------------------------------------------------------------------------------------
# Loss mask: preview and checks on the trainer's own processed dataset


def mask_preview(tokenizer, input_ids: list[int], labels: list[int], *, color: bool) -> str:
    """The row's text with the trained tokens in ``[[...]]`` (green when ``color``)."""
    parts: list[str] = []
    run: list[int] = []
    trained_run = None
    for tid, lab in zip(input_ids, labels):
        t = lab != -100
        if trained_run is None or t == trained_run:
            run.append(tid)
        else:
            parts.append(_piece(tokenizer, run, trained_run, color))
            run = [tid]
        trained_run = t
    if run:
        parts.append(_piece(tokenizer, run, bool(trained_run), color))
    return "".join(parts)


def _piece(tokenizer, ids: list[int], trained: bool, color: bool) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False)
    if not trained:
        return text
    return f"\x1b[32m{text}\x1b[0m" if color else f"[[{text}]]"


def check_mask(dataset, tokenizer, *, eos_id: int, eos: str, max_length: int, rows_meta: dict[str, dict]) -> dict:
    """Refuse rows that would train badly; returns {rows, truncated, trained_tokens, tokens}."""
    truncated = 0
    trained_total = tokens_total = 0
    for ex in dataset:
        rid = ex.get("id", "?")
        ids, labels = ex["input_ids"], ex["labels"]
        trained = [t for t in labels if t != -100]
        if not trained:
            raise UserError(f"row {rid}: no trained tokens (the completion is empty or masked)")
        content = tokenizer.decode([t for t in trained if t != eos_id], skip_special_tokens=False)
        if not content.strip():
            raise UserError(f"row {rid}: the completion is empty: only the end-of-turn token {eos} would be trained")
        if eos_id not in trained:
            raise UserError(
                f"row {rid}: the end-of-turn token {eos} is not among the trained tokens (the chat template does not "
                "close the assistant turn with it), so the model would never learn to stop"
            )
        tokens_total += min(len(ids), max_length)
        if len(ids) > max_length:
            truncated += 1
            kept = [t for t in labels[:max_length] if t != -100]
            if not kept:
                raise UserError(f"row {rid}: max_length {max_length} cuts the whole completion ({len(ids)} tokens); raise --max-length")
            meta = rows_meta.get(str(rid), {})
            if meta.get("format") == "plug" and meta.get("target"):
                text = tokenizer.decode(kept, skip_special_tokens=True)
                p = formats.parse(text, target=meta["target"], pivot=meta.get("pivot") or "en", fmt="plug", finished=False)
                if not (p.target or "").strip():
                    raise UserError(
                        f"row {rid}: max_length {max_length} cuts the target-language section of this PLUG row away "
                        f"({len(ids)} tokens); raise --max-length or drop long rows (--max-train-samples, plug-lite data)"
                    )
            kept_count = len(kept)
        else:
            kept_count = len(trained)
        trained_total += kept_count
    return {"rows": len(dataset), "truncated": truncated, "trained_tokens": trained_total, "tokens": tokens_total}


def _trained_after_collation(collator, feats: list[dict]) -> tuple[list[int], list[int]]:
    """(trained labels of ``feats`` collated into one flat sequence, trained labels of ``feats``)."""
    batch = collator(feats)
    got = [int(t) for t in batch["labels"][0].tolist() if t != -100]
    return got, [t for f in feats for t in f["labels"] if t != -100]


def check_packed(trainer, tokenizer, *, preview: bool, color: bool, n: int = 8) -> None:
    """Collate packed sequences the way training will (padding-free): every trained label of the
    rows, end-of-turn tokens included, must still be trained. With ``preview``, print the first
    rows of the first packed sequence with their boundaries."""
    ds = trainer.train_dataset
    for i in range(min(n, len(ds))):
        got, want = _trained_after_collation(trainer.data_collator, [ds[i]])
        if got != want:  # the end-of-turn tokens included
            raise UserError(f"packed sequence {i}: the padding-free collator changed the trained tokens "
                            f"({len(got)} trained, expected {len(want)}); train with --no-packing")
    if preview and len(ds):
        ex = ds[0]
        spans = batching.packed_layout(ex)
        print(f"--- packed sequence 1 of {len(ds)}: {len(spans)} rows, {len(ex['input_ids'])} tokens; "
              f"the first {min(2, len(spans))} rows, each starting at position 0 ---")
        for k, (a, b) in enumerate(spans[:2]):
            if k:
                print("~~~~ (row boundary: attention does not cross it) ~~~~")
            print(mask_preview(tokenizer, ex["input_ids"][a:b], ex["labels"][a:b], color=color))


def check_collated(trainer, dataset, *, eos_id: int, n: int = 16) -> None:
    """Collate a few rows with the trainer's collator: padding must not mask the trained EOS."""
    n = min(n, len(dataset))
    if n == 0:
        return
    feats = [{"input_ids": dataset[i]["input_ids"], "labels": dataset[i]["labels"]} for i in range(n)]
    batch = trainer.data_collator(feats)
    if n > 1 and batch["labels"].shape[0] == 1:
        # a padding-free collator (TRL's with padding_free, Unsloth's auto mode) flattened the rows
        got, want = _trained_after_collation(trainer.data_collator, feats)
        if got != want:
            raise UserError(f"the padding-free collator ({type(trainer.data_collator).__name__}) changed the trained "
                            f"tokens of the first {n} rows ({len(got)} trained, expected {len(want)})")
        return
    for i, f in enumerate(feats):
        want = sum(1 for t in f["labels"] if t != -100)
        got_labels = batch["labels"][i].tolist()
        got = sum(1 for t in got_labels if t != -100)
        if got != want or eos_id not in got_labels:
            pad = trainer.processing_class.pad_token if hasattr(trainer, "processing_class") else "?"
            raise UserError(
                f"row {dataset[i].get('id', i)}: the padding token {pad!r} masks trained tokens (pad == eos?); "
                "give the tokenizer a pad token different from its end-of-turn token"
            )


# --------------------------------------------------------------------------------------------
# Metrics


def _peak_memory_mib() -> float:
    """Peak GPU memory allocated by torch (CUDA), else the process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _peak_reserved_mib() -> float | None:
    """Peak GPU memory reserved by torch's caching allocator (what nvidia-smi sees), or None on CPU."""
    import torch

    return torch.cuda.max_memory_reserved() / 2**20 if torch.cuda.is_available() else None


def _metrics_callback(path: Path):
    from transformers import TrainerCallback

    class MetricsLogger(TrainerCallback):
        """Appends loss, tokens/s (all and trained), peak memory to metrics.jsonl at every logging
        step (rank 0). Token counts come from the trainer (:func:`_counting_trainer`), all processes."""

        trainer = None

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.last_t, self.last = self.t0, (0, 0)
            self.out: JsonlAppender | None = None

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs or not state.is_world_process_zero:
                return
            now = time.perf_counter()
            tokens = getattr(self.trainer, "plug_tokens", 0)
            trained = getattr(self.trainer, "plug_trained_tokens", 0)
            dt = now - self.last_t
            tps = (tokens - self.last[0]) / dt if dt > 0 else None
            ttps = (trained - self.last[1]) / dt if dt > 0 else None
            self.last_t, self.last = now, (tokens, trained)
            if self.out is None:
                self.out = JsonlAppender(path)
            reserved = _peak_reserved_mib()
            self.out.write(
                {"step": state.global_step, "epoch": state.epoch, "loss": logs.get("loss"),
                 "lr": logs.get("learning_rate"), "tokens": tokens, "trained_tokens": trained,
                 "tokens_per_s": tps, "trained_tokens_per_s": ttps,
                 "peak_memory_mib": round(_peak_memory_mib(), 1),
                 "peak_reserved_mib": round(reserved, 1) if reserved is not None else None,
                 "seconds": round(now - self.t0, 3)}
            )

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = self.last_t = time.perf_counter()
            self.last = (getattr(self.trainer, "plug_tokens", 0), getattr(self.trainer, "plug_trained_tokens", 0))

        def close(self) -> None:
            if self.out is not None:
                self.out.close()

    return MetricsLogger()


# --------------------------------------------------------------------------------------------
# The run


def _default_name(cfg: TrainConfig) -> str:
    base = "gemma-3-270m" if cfg.model == "default" else Path(cfg.model.rstrip("/")).name
    return runs.run_name(cfg.format, cfg.target, model=base)


def _save_dir(obj_save, dest: Path) -> None:
    """Save into a temporary sibling folder and rename it onto ``dest``."""
    import shutil

    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    obj_save(str(tmp))
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


@dataclass
class Prepared:
    """Everything :func:`prepare` set up; :func:`train` runs it. Tests read ``trainer.train_dataset``."""

    cfg: TrainConfig
    preset: str
    backend: str
    run: Path
    last_checkpoint: Path | None
    trainer: Any
    tokenizer: Any
    eos: str
    template_name: str | None
    base_name: str
    size_label: str
    local: Path | None
    rows: list[dict]
    data_summary: dict
    dtype: Any
    four_bit: bool
    metrics_cb: Any
    token_plan: Any = None
    spec: PlugSpec | None = None  # the run's: what its rows say, else the config's


def prepare(config: TrainConfig, *, callbacks: list | None = None) -> Prepared:
    """Resolve the config, load data and model, build the trainer and check its loss mask."""
    cfg = config
    if cfg.format not in FORMATS:
        raise UserError(f"unknown format {cfg.format!r}; expected one of {', '.join(FORMATS)}")
    if cfg.backend not in BACKENDS:
        raise UserError(f"unknown backend {cfg.backend!r}; expected one of {', '.join(BACKENDS)}")
    if cfg.preset not in ("auto", *PRESETS):
        raise UserError(f"unknown preset {cfg.preset!r}; expected auto or one of {', '.join(PRESETS)}")
    if cfg.model != "default":
        resolve_model(cfg.model)  # an unknown path fails before torch is imported
    if cfg.data != "sample" and not Path(cfg.data).is_file():
        raise UserError(f"{cfg.data}: data file not found")

    import torch

    cuda = torch.cuda.is_available()
    capability = torch.cuda.get_device_capability() if cuda else None
    cfg, preset = resolve(cfg, cuda_capability=capability)
    rows, data_summary = load_rows(cfg)
    spec = PlugSpec.from_rows(rows, format=cfg.format, target=cfg.target, pivot=cfg.pivot)
    backend, reason = choose_backend(cfg.backend, cuda=cuda)
    print(f"backend: {backend} ({reason}); preset: {preset}")
    name, local = resolve_model(cfg.model)

    if backend == "unsloth":
        dtype = (torch.bfloat16 if capability and capability[0] >= 8 else torch.float16)
    elif backend == "qlora":
        dtype = torch.bfloat16 if capability[0] >= 8 else torch.float16
    else:
        dtype = torch.float32
    four_bit = backend in ("unsloth", "qlora", "cpu-qlora")

    run = Path(cfg.output_dir or Path("runs") / (cfg.name or _default_name(cfg)))
    ckpt_dir = run / "checkpoints"
    last = _last_checkpoint(ckpt_dir)
    if runs.is_finished(run) and not cfg.resume:
        raise UserError(f"{run}: holds a finished run ({runs.RUN_FILE}); choose another --output-dir")
    if last and not cfg.resume:
        raise UserError(f"{run}: holds checkpoints of an interrupted run; pass --resume to continue it, or remove the folder")
    run.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(cfg, output_dir=str(run))
    if int(os.environ.get("RANK", "0")) == 0:
        _write_yaml(run / "config.yaml", dataclasses.asdict(cfg))

    base_name, size_label, n_params, _ = _describe_model(name, cfg.trust_remote_code)
    print(f"model: {cfg.model} -> {base_name} {size_label} ({n_params:,} parameters); data: {data_summary['source']}, {len(rows)} rows")
    model, tokenizer = load_base(cfg, name, backend, dtype)
    template_name = setup_chat_template(tokenizer, cfg.chat_template)
    eos = end_of_turn_token(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    if eos_id is None or eos_id == getattr(tokenizer, "unk_token_id", object()):
        raise UserError(f"the chat template's end-of-turn token {eos!r} is not in the vocabulary")
    token_plan = turn_tokens.plan(model, tokenizer, eos, cfg.turn_tokens)
    print(token_plan.summary())
    model = add_lora(model, cfg, backend, token_plan)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == eos_id:
        # Padding with the EOS is harmless here (labels come from the dataset) but a distinct pad is safer.
        for cand in ("<|endoftext|>", "<pad>", "<unk>"):
            cid = tokenizer.convert_tokens_to_ids(cand)
            if cand in tokenizer.get_vocab() and cid != eos_id:
                tokenizer.pad_token = cand
                break

    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    packed_ok, why = False, ""
    if cfg.packing:
        probe = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False)
                 for r in rows[:2]]
        packed_ok, why = batching.packed_attention_ok(model, probe, tokenizer.pad_token_id)
        if not packed_ok:
            why = f"not packed: {why}"
    mode = batching.choose(packing=bool(cfg.packing), packed_ok=packed_ok, group_by_tokens=bool(cfg.group_by_tokens))
    bf16 = dtype == torch.bfloat16
    fp16 = dtype == torch.float16
    args = _sft_config(
        SFTConfig,
        output_dir=str(ckpt_dir),
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        lr_scheduler_type="linear",
        warmup_ratio=0.05,
        group_by_length=bool(cfg.packing and mode == "rows"),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        gradient_checkpointing=bool(cfg.gradient_checkpointing) and backend != "unsloth",
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        save_strategy="steps",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=bf16,
        fp16=fp16,
        optim="paged_adamw_8bit" if backend in GPU_BACKENDS else "adamw_torch",
        report_to="none",
        max_length=None,  # the whole row is tokenized first, checked, then truncated below
        eos_token=eos,
        completion_only_loss=None,  # TRL 1.16: True for prompt-completion rows
        dataset_num_proc=None,
        dataloader_pin_memory=cuda,
        disable_tqdm=False,
        use_cpu=not cuda,
    )
    rows_meta = {r["id"]: r for r in rows}
    ds = Dataset.from_list([{"id": r["id"], "prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    cbs = [_metrics_callback(run / "metrics.jsonl"), *(callbacks or [])]
    if token_plan.ids:
        turn_tokens.cheap_row_gradients(model)
    trainer_cls = _counting_trainer(SFTTrainer, own_loss=bool(token_plan.ids))
    trainer = trainer_cls(model=model, args=args, train_dataset=ds, processing_class=tokenizer, callbacks=cbs)
    cbs[0].trainer = trainer
    if not trainer.completion_only_loss:
        raise UserError("TRL did not enable completion-only loss for these prompt-completion rows; refusing to train on prompts")

    processed = trainer.train_dataset
    if cfg.drop_long_rows:
        n_before = len(processed)
        processed = processed.filter(lambda ex: len(ex["input_ids"]) <= cfg.max_length)
        print(f"dropped {n_before - len(processed)} of {n_before} rows longer than max_length {cfg.max_length}")
        if not len(processed):
            raise UserError(f"every row is longer than max_length {cfg.max_length}; raise --max-length")
        data_summary["dropped_long_rows"] = n_before - len(processed)
    color = sys.stdout.isatty()
    for i in range(min(cfg.preview_rows, len(processed))):
        ex = processed[i]
        legend = "green" if color else "[[...]]"
        print(f"--- mask preview, row {ex.get('id', i)} ({len(ex['input_ids'])} tokens; trained text in {legend}) ---")
        print(mask_preview(tokenizer, ex["input_ids"], ex["labels"], color=color))
    stats = check_mask(processed, tokenizer, eos_id=eos_id, eos=eos, max_length=cfg.max_length, rows_meta=rows_meta)
    check_collated(trainer, processed, eos_id=eos_id)
    share = stats["trained_tokens"] / max(1, stats["tokens"])
    print(
        f"mask: {stats['rows']} rows, {stats['truncated']} truncated at max_length {cfg.max_length}, "
        f"{stats['trained_tokens']} trained of {stats['tokens']} tokens ({share:.0%}); EOS {eos} trained in every row"
    )
    L = cfg.max_length
    trainer.train_dataset = processed.map(lambda ex: {"input_ids": ex["input_ids"][:L], "labels": ex["labels"][:L]})
    sequences = micro_batches = None
    if mode == "packed" and not batching.collator_can_go_padding_free(trainer.data_collator):
        why = f"not packed: the trainer's collator ({type(trainer.data_collator).__name__}) is not TRL's"
        mode = batching.choose(packing=False, packed_ok=False, group_by_tokens=bool(cfg.group_by_tokens))
    if mode == "packed":
        trainer.train_dataset = batching.pack(trainer.train_dataset, L)
        sequences = len(trainer.train_dataset)
        trainer.data_collator.padding_free = True
        trainer.padding_free = True
        check_packed(trainer, tokenizer, preview=cfg.preview_rows > 0, color=color)
    elif mode == "tokens":
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
        trainer.plug_batches = batching.TokenBudgetBatches(lengths, cfg.batch_size * L, seed=cfg.seed,
                                                           world=trainer.args.world_size)
        micro_batches = len(trainer.plug_batches)
    layout = batching.describe(mode=mode, rows=len(processed), sequences=sequences, micro_batches=micro_batches,
                               batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, max_length=L,
                               world=trainer.args.world_size, why=why)
    print(layout.pop("text"))
    data_summary.update(truncated_rows=stats["truncated"], trained_tokens=stats["trained_tokens"],
                        tokens=stats["tokens"], trained_share=round(share, 4), batching=layout)
    return Prepared(cfg=cfg, preset=preset, backend=backend, run=run, last_checkpoint=last, trainer=trainer,
                    tokenizer=tokenizer, eos=eos, template_name=template_name, base_name=base_name,
                    size_label=size_label, local=local, rows=rows, data_summary=data_summary, dtype=dtype,
                    four_bit=four_bit, metrics_cb=cbs[0], token_plan=token_plan, spec=spec)


def train(config: TrainConfig, *, callbacks: list | None = None) -> Path:
    """Fine-tune, write the run folder (``plug_run.json`` last), return its path."""
    import torch

    prep = prepare(config, callbacks=callbacks)
    cfg, trainer, tokenizer, run, last = prep.cfg, prep.trainer, prep.tokenizer, prep.run, prep.last_checkpoint
    preset, backend, rows, data_summary, dtype, four_bit = prep.preset, prep.backend, prep.rows, prep.data_summary, prep.dtype, prep.four_bit

    t0 = time.perf_counter()
    resume_from = str(last) if (cfg.resume and last) else None
    if cfg.resume:
        print(f"resuming from {last}" if last else "--resume: no checkpoint yet, starting from step 0")
    try:
        out = trainer.train(resume_from_checkpoint=resume_from)
    except torch.cuda.OutOfMemoryError:
        nxt = SMALLER.get(preset, "a smaller model or --batch-size 1 --max-length 1024")
        raise UserError(f"CUDA out of memory with preset {preset}; try --preset {nxt} (then --resume continues)") from None
    seconds = time.perf_counter() - t0
    mcb = prep.metrics_cb
    state = trainer.state
    if not trainer.is_world_process_zero():
        # One run folder: under torchrun / accelerate launch only rank 0 writes the adapter and the record.
        return run

    _save_dir(trainer.model.save_pretrained, run / "adapter")
    tokenizer.chat_template = _strip_generation_markers(tokenizer.chat_template)
    _save_dir(tokenizer.save_pretrained, run / "tokenizer")

    tokens, trained = trainer.plug_tokens, trainer.plug_trained_tokens
    reserved = _peak_reserved_mib()
    metrics = {
        "train_loss": out.training_loss,
        "final_loss": next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
        "first_loss": next((h["loss"] for h in state.log_history if "loss" in h), None),
        "steps": state.global_step,
        "seconds": round(seconds, 2),
        "tokens": tokens,
        "trained_tokens": trained,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "trained_tokens_per_s": trained / seconds if seconds > 0 else None,
        "peak_memory_mib": round(_peak_memory_mib(), 1),
        "peak_reserved_mib": round(reserved, 1) if reserved is not None else None,
        "world_size": trainer.args.world_size,
        "device": _device_name(),
    }
    compute = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}.get(dtype, str(dtype))
    record = {
        "plug_lite_version": __version__,
        "base_model": cfg.model,
        "base_model_path": str(prep.local) if prep.local else None,
        "base_name": prep.base_name,
        "size_label": prep.size_label,
        **prep.spec.run_fields(),
        "backend": backend,
        "load_in_4bit": four_bit,
        "bnb_4bit": {"quant_type": "nf4", "double_quant": True, "compute_dtype": compute} if four_bit else None,
        "chat_template_name": prep.template_name,
        "eos_token": prep.eos,
        "turn_tokens": prep.token_plan.to_dict() if prep.token_plan else None,
        "config": dataclasses.asdict(cfg),
        "versions": _versions(),
        "data_summary": data_summary,
        "metrics": metrics,
    }
    mcb.close()
    write_json(run / runs.RUN_FILE, record)
    print(f"done: {run} (loss {metrics['first_loss']} -> {metrics['final_loss']}, {state.global_step} steps, {seconds:.0f} s)")
    return run


def _device_name() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def _last_checkpoint(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    cks = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    cks = [p for p in cks if (p / "trainer_state.json").exists()]
    return max(cks, key=lambda p: int(p.name.split("-")[-1])) if cks else None


def _write_yaml(path: Path, data: dict) -> None:
    import yaml

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


# --------------------------------------------------------------------------------------------
# Command line


def main(config: str | None = None, **fields: Any) -> Path:
    """Train from a YAML file and/or keyword fields of :class:`TrainConfig`; returns the run folder."""
    return train(load_config(config, **fields))


def cli(argv: list[str] | None = None) -> int:
    ns = vars(build_parser().parse_args(argv))

    def body() -> int:
        main(**ns)
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(cli())
