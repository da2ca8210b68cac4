"""``plug-lite train``: LoRA / QLoRA supervised fine-tuning on PLUG rows with TRL (see :mod:`.run`)."""

from .run import (BACKENDS, PRESETS, Prepared, TrainConfig, build_parser, choose_backend, cli, load_config,
                  load_rows, main, prepare, resolve, resolve_model, train)

__all__ = ["TrainConfig", "PRESETS", "BACKENDS", "Prepared", "prepare", "train", "main", "cli", "load_config",
           "choose_backend", "build_parser", "resolve", "resolve_model", "load_rows"]
