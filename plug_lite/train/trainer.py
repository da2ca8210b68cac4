"""Step 6, the trainer: TRL's ``SFTTrainer`` with this run's ``SFTConfig``, counting the tokens it
sees and trains (all processes) and logging loss, tokens/s and peak memory to ``metrics.jsonl``.

Checkpoints are saved every ``save_steps`` (``--resume`` continues from the last one). The
trainer's own collator, tokenization and completion-only loss (TRL 1.16's default for
prompt-completion rows) are what step 7 checks.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from ..io import JsonlAppender, UserError
from . import turn_tokens
from .config import GPU_BACKENDS, TrainConfig
from .model import Backend, versions

__all__ = ["build_trainer", "sft_arguments", "peak_memory_mib", "peak_reserved_mib", "device_name"]


def build_trainer(model, tokenizer, rows: list[dict], cfg: TrainConfig, backend: Backend, *, eos: str,
                  token_plan: turn_tokens.TokenPlan, group_by_length: bool, checkpoints: Path, metrics_file: Path,
                  callbacks: list | None = None):
    """The trainer of ``rows`` (it tokenizes them itself). It refuses to go on when TRL would
    train the prompts too. ``callbacks``: more TrainerCallbacks, after the metrics logger."""
    from datasets import Dataset
    from trl import SFTTrainer

    args = sft_arguments(cfg, backend, eos=eos, output_dir=checkpoints, group_by_length=group_by_length)
    ds = Dataset.from_list([{"id": r["id"], "prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    logger = _metrics_callback(metrics_file)
    if token_plan.ids:
        turn_tokens.cheap_row_gradients(model)
    trainer_cls = _counting_trainer(SFTTrainer, own_loss=bool(token_plan.ids))
    trainer = trainer_cls(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                          callbacks=[logger, *(callbacks or [])])
    logger.trainer = trainer
    if not trainer.completion_only_loss:
        raise UserError("TRL did not enable completion-only loss for these prompt-completion rows; refusing to train on prompts")
    return trainer


def sft_arguments(cfg: TrainConfig, backend: Backend, *, eos: str, output_dir: Path, group_by_length: bool):
    """TRL's ``SFTConfig`` for this run (``group_by_length``: rows sorted by length, when not packed)."""
    import torch
    from trl import SFTConfig

    return _sft_config(
        SFTConfig,
        output_dir=str(output_dir),
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.epochs,
        learning_rate=cfg.lr,
        lr_scheduler_type="linear",
        warmup_ratio=0.05,
        group_by_length=group_by_length,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        gradient_checkpointing=bool(cfg.gradient_checkpointing) and backend.name != "unsloth",
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        save_strategy="steps",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=backend.dtype == torch.bfloat16,
        fp16=backend.dtype == torch.float16,
        optim="paged_adamw_8bit" if backend.name in GPU_BACKENDS else "adamw_torch",
        report_to="none",
        max_length=None,  # the whole row is tokenized first, checked, then truncated (step 7)
        eos_token=eos,
        completion_only_loss=None,  # TRL 1.16: True for prompt-completion rows
        dataset_num_proc=None,
        dataloader_pin_memory=backend.cuda,
        disable_tqdm=False,
        use_cpu=not backend.cuda,
    )


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
        v = versions()
        raise UserError(f"TRL {v['trl']} / transformers {v['transformers']}: SFTConfig has no {', '.join(unknown)}; "
                        "use the versions in constraints.txt")
    return cls(**kw)


def peak_memory_mib() -> float:
    """Peak GPU memory allocated by torch (CUDA), else the process's peak resident memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_reserved_mib() -> float | None:
    """Peak GPU memory reserved by torch's caching allocator (what nvidia-smi sees), or None on CPU."""
    import torch

    return torch.cuda.max_memory_reserved() / 2**20 if torch.cuda.is_available() else None


def _metrics_callback(path: Path):
    """A TrainerCallback writing ``path`` (its ``trainer`` is set once the trainer exists)."""
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
            reserved = peak_reserved_mib()
            self.out.write(
                {"step": state.global_step, "epoch": state.epoch, "loss": logs.get("loss"),
                 "lr": logs.get("learning_rate"), "tokens": tokens, "trained_tokens": trained,
                 "tokens_per_s": tps, "trained_tokens_per_s": ttps,
                 "peak_memory_mib": round(peak_memory_mib(), 1),
                 "peak_reserved_mib": round(reserved, 1) if reserved is not None else None,
                 "seconds": round(now - self.t0, 3)}
            )

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = self.last_t = time.perf_counter()
            self.last = (getattr(self.trainer, "plug_tokens", 0), getattr(self.trainer, "plug_trained_tokens", 0))

        def on_train_end(self, args, state, control, **kw):
            self.close()

        def close(self) -> None:
            if self.out is not None:
                self.out.close()
                self.out = None

    return MetricsLogger()


def device_name() -> str:
    """The GPU's name, or the CPU's cores and architecture."""
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"
