"""What ``--resume`` continues (part of step 9, the run): each checkpoint carries
``plug_resume.json`` beside the trainer's own files, holding

* ``settings``: what the run's result depends on (:func:`settings`): the base model and the data
  by their files' identity (:func:`plug_lite.io.file_identity`, not their names), the spec, the
  LoRA (rank, alpha, dropout, target modules), the learning rate, seed, batch layout and row
  length. A resume with another value is refused, one line naming the field, unless
  ``--force-resume``; never with another base model, LoRA rank, target modules or trained turn
  tokens (:data:`STRUCTURE`: the checkpoint's weights would not fit them); a checkpoint without the file (an older plug_lite, or one killed while
  saving) is refused the same way, since nothing says what it continues.
* ``tokens`` / ``trained_tokens``: the trainer's token counters at that step, restored on resume
  so ``metrics.jsonl`` and ``plug_run.json`` count the whole run, not the part after the resume.

On resume ``metrics.jsonl`` loses its lines after the checkpoint's step: the steps redone after
it are logged once. Left out of the comparison on purpose: ``max_steps`` / ``epochs`` (training
longer is what a resume is often for), ``save_steps``, ``logging_steps``, ``preview_rows``,
gradient checkpointing (same result, other memory) and the run's name and folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io import UserError, file_identity, read_json, read_jsonl_resumable, refuse_changed, write_json, write_jsonl
from .config import TrainConfig

__all__ = ["RESUME_FILE", "COMPARED", "STRUCTURE", "settings", "check", "saver", "restore"]

RESUME_FILE = "plug_resume.json"

#: The TrainConfig fields (after the preset filled them) whose change makes the run another run.
COMPARED = ("format", "target", "pivot", "think", "backend", "lr", "seed", "batch_size", "grad_accum", "max_length",
            "max_train_samples", "drop_long_rows", "packing", "group_by_tokens", "lora_r", "lora_alpha", "lora_dropout",
            "target_modules", "chat_template", "turn_tokens")
#: The settings a checkpoint's weights are shaped by: not even --force-resume continues another.
STRUCTURE = ("model", "lora_r", "target_modules", "turn_tokens")


def settings(cfg: TrainConfig, local_base: Path | None) -> dict[str, Any]:
    """What this run's result depends on (``cfg`` resolved; ``local_base``: the base model's
    folder, None for a hub name)."""
    model = file_identity(*sorted(local_base.glob("*.safetensors"))) if local_base else cfg.model
    data = cfg.data if cfg.data == "sample" else file_identity(cfg.data)
    return {"model": model, "data": data, **{k: getattr(cfg, k) for k in COMPARED}}


def check(checkpoint: Path | None, now: dict[str, Any], *, force: bool) -> None:
    """Refuse to continue ``checkpoint`` with other settings than it was trained with (see the
    module doc)."""
    if checkpoint is None:
        return
    f = checkpoint / RESUME_FILE
    if not f.is_file():
        if force:
            return
        raise UserError(f"{checkpoint}: records no settings to compare with this run's (made by an older plug_lite, "
                        "or killed while saving); pass --force-resume to continue it anyway")
    saved = read_json(f)
    recorded = saved.get("settings") if isinstance(saved, dict) else None
    if not isinstance(recorded, dict):
        raise UserError(f"{f}: not a resume record (expected an object with 'settings')")
    where, made, instead = str(checkpoint), "was trained", "another --output-dir"
    refuse_changed(where, recorded, {k: now[k] for k in STRUCTURE}, made=made, instead=instead, can_force=False)
    refuse_changed(where, recorded, now, made=made, instead=instead, force=force)


def saver(now: dict[str, Any]):
    """A TrainerCallback writing :data:`RESUME_FILE` into each checkpoint the trainer saves (its
    ``trainer`` is set once the trainer exists; rank 0 writes)."""
    from transformers import TrainerCallback

    class ResumeRecord(TrainerCallback):
        trainer = None

        def on_save(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                write_json(folder / RESUME_FILE, {
                    "step": state.global_step, "settings": now,
                    "tokens": getattr(self.trainer, "plug_tokens", 0),
                    "trained_tokens": getattr(self.trainer, "plug_trained_tokens", 0)})

    return ResumeRecord()


def restore(trainer, checkpoint: Path, metrics_file: Path) -> int:
    """Before training resumes from ``checkpoint``: the token counters as they were at its step,
    and ``metrics.jsonl`` without the lines of later steps (they are trained again). Returns the
    checkpoint's step."""
    step = int(checkpoint.name.rpartition("-")[2])
    f = checkpoint / RESUME_FILE
    saved = read_json(f) if f.is_file() else {}
    trainer.plug_tokens = int(saved.get("tokens") or 0)
    trainer.plug_trained_tokens = int(saved.get("trained_tokens") or 0)
    trainer.plug_restored = (trainer.plug_tokens, trainer.plug_trained_tokens)
    if metrics_file.is_file():
        lines = read_jsonl_resumable(metrics_file)
        kept = [x for x in lines if isinstance(x.get("step"), int) and x["step"] <= step]
        if len(kept) != len(lines):
            write_jsonl(metrics_file, kept)
    return step
