"""Step 1, the config: :class:`TrainConfig` defaults < ``--config FILE.yaml`` < flags; then the
preset (``t4``, ``ampere``, ``cpu-demo``, ``cpu-tiny``) fills every field left unset.

The flags of ``plug-lite train`` are made from :class:`TrainConfig` (:func:`build_parser`), so a
field is a flag and a YAML key under the same name (``max_length``: ``--max-length``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..cli import Parser, add_arguments, check_values, dataclass_params, value_type
from ..io import UserError
from ..spec import FORMATS

__all__ = ["TrainConfig", "PRESETS", "SMALLER", "BACKENDS", "GPU_BACKENDS", "build_parser", "load_config", "resolve",
           "check_names"]

#: The values of ``--backend`` (:func:`plug_lite.train.model.choose_backend` picks one for ``auto``).
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
    resume: bool = _f(False, "continue from the last checkpoint in the run folder (refused when the model, data or a "
                             "setting that changes the result differs from the checkpoint's)")
    force_resume: bool = _f(False, "with --resume: continue a checkpoint made with other settings anyway")
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


def build_parser() -> argparse.ArgumentParser:
    """Flags generated from :class:`TrainConfig` (defaults suppressed, so only given flags override)."""
    p = Parser(prog="plug-lite train",
                                description="LoRA / QLoRA SFT of PLUG rows with TRL (Unsloth when present).")
    p.add_argument("--config", default=argparse.SUPPRESS, help="YAML file with TrainConfig fields (flags override it)")
    add_arguments(p, dataclass_params(TrainConfig), suppress=True)
    return p


def load_config(path: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig defaults, then the YAML file, then ``overrides``; a value out of its range (a
    learning rate of -1, a LoRA rank of 0: :data:`plug_lite.cli.CHECKS`) is a one-line error
    naming the file's field or the flag."""
    values: dict[str, Any] = {}
    params = dataclass_params(TrainConfig)
    names = {p.name: p for p in params}
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
        check_values(params, values, {k: f"{p}: {k}" for k in values})
    check_values(params, overrides)
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


def check_names(cfg: TrainConfig) -> None:
    """The fields that name one of a fixed set (format, backend, preset), checked before anything loads."""
    if cfg.format not in FORMATS:
        raise UserError(f"unknown format {cfg.format!r}; expected one of {', '.join(FORMATS)}")
    if cfg.backend not in BACKENDS:
        raise UserError(f"unknown backend {cfg.backend!r}; expected one of {', '.join(BACKENDS)}")
    if cfg.preset not in ("auto", *PRESETS):
        raise UserError(f"unknown preset {cfg.preset!r}; expected auto or one of {', '.join(PRESETS)}")
