"""Step 9, the run: :func:`prepare` takes steps 1-8 in order and returns the run ready to train;
:func:`train` trains it and writes the run folder, ``plug_run.json`` last (its layout:
:mod:`plug_lite.runs`). :func:`main` and :func:`cli` are ``plug-lite train``.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, runs
from ..io import UserError, atomic_write_text, run_cli
from ..spec import PlugSpec
from . import batching, turn_tokens
from .config import SMALLER, TrainConfig, build_parser, check_names, load_config, resolve
from .mask import check_loss_mask, check_packed
from .model import (Backend, BaseModel, add_lora, cuda_capability, describe_base, load_base, pick_backend,
                    resolve_model, versions)
from .rows import check_source, load_rows, rows_spec
from .template import ChatFormat, set_pad_token, setup_chat_format, strip_generation_markers
from .trainer import build_trainer, device_name, peak_memory_mib, peak_reserved_mib

__all__ = ["RunFolder", "Prepared", "prepare", "fit", "train", "main", "cli"]

CHECKPOINTS = "checkpoints"  # trainer checkpoints inside the run folder (for --resume)


@dataclass(frozen=True)
class RunFolder:
    """Where the run is written, and the checkpoint ``--resume`` continues from."""

    path: Path
    last_checkpoint: Path | None = None

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"


@dataclass
class Prepared:
    """A run ready to train: the value of each step of :func:`prepare`. Tests read
    ``trainer.train_dataset``."""

    cfg: TrainConfig  # resolved: the preset's values filled in, output_dir set
    folder: RunFolder
    backend: Backend
    base: BaseModel
    spec: PlugSpec  # the run's: what its rows say, else the config's
    chat: ChatFormat
    token_plan: turn_tokens.TokenPlan
    tokenizer: Any  # with the inference chat template and a padding token
    trainer: Any  # its rows tokenized, checked, cut to max_length and laid out in micro-batches
    data_summary: dict  # the rows used and dropped, the mask's counts, the batching


# --------------------------------------------------------------------------------------------
# Steps 1-8


def prepare(config: TrainConfig, *, callbacks: list | None = None) -> Prepared:
    """Steps 1-8 of the package docstring, in order. Input errors that need no model (a name, the
    model folder, the data file) come before torch is imported. ``callbacks``: more
    TrainerCallbacks."""
    _check_early(config)
    capability = cuda_capability()
    cfg, preset = resolve(config, cuda_capability=capability)  # 1. config and preset
    rows, data_summary = load_rows(cfg)  # 2. rows
    spec = rows_spec(rows, cfg)
    backend = pick_backend(cfg.backend, capability)  # 3. backend, base model
    print(f"backend: {backend.name} ({backend.reason}); preset: {preset}")
    name, local = resolve_model(cfg.model)
    folder = open_run_folder(cfg)
    cfg = dataclasses.replace(cfg, output_dir=str(folder.path))
    _write_config(cfg, folder)
    base = describe_base(name, local, trust_remote_code=cfg.trust_remote_code)
    print(f"model: {cfg.model} -> {base.base_name} {base.size_label} ({base.parameters:,} parameters); "
          f"data: {data_summary['source']}, {len(rows)} rows")
    model, tokenizer = load_base(cfg, base.name, backend.name, backend.dtype)
    chat = setup_chat_format(tokenizer, cfg.chat_template)  # 4. chat template, EOS
    token_plan = turn_tokens.plan(model, tokenizer, chat.eos, cfg.turn_tokens)  # 5. turn tokens
    print(token_plan.summary())
    model = add_lora(model, cfg, backend.name, token_plan)  # 3. the adapter
    set_pad_token(tokenizer, chat.eos_id)
    planned = batching.plan(  # 8. what the model allows
        model, tokenizer, rows, packing=bool(cfg.packing), group_by_tokens=bool(cfg.group_by_tokens))
    trainer = build_trainer(model, tokenizer, rows, cfg, backend, eos=chat.eos, token_plan=token_plan,  # 6. trainer
                            group_by_length=bool(cfg.packing) and planned.mode == "rows",
                            checkpoints=folder.checkpoints, metrics_file=folder.metrics_file, callbacks=callbacks)
    mask = check_loss_mask(trainer, tokenizer, cfg, chat, rows)  # 7. loss mask
    layout = _lay_out(trainer, tokenizer, cfg, planned, rows=mask.rows)  # 8. batching
    data_summary.update(mask.summary(), batching=layout)
    return Prepared(cfg=cfg, folder=folder, backend=backend, base=base, spec=spec, chat=chat, token_plan=token_plan,
                    tokenizer=tokenizer, trainer=trainer, data_summary=data_summary)


def _check_early(cfg: TrainConfig) -> None:
    """The input errors found before torch is imported: names, the model folder, the data file."""
    check_names(cfg)
    if cfg.model != "default":
        resolve_model(cfg.model)
    check_source(cfg)


def open_run_folder(cfg: TrainConfig) -> RunFolder:
    """The run folder (``--output-dir``, default ``runs/<name>``), created. A finished run is
    refused; so is an interrupted one unless ``--resume`` continues it."""
    run = Path(cfg.output_dir or Path("runs") / (cfg.name or _default_name(cfg)))
    last = _last_checkpoint(run / CHECKPOINTS)
    if runs.is_finished(run) and not cfg.resume:
        raise UserError(f"{run}: holds a finished run ({runs.RUN_FILE}); choose another --output-dir")
    if last and not cfg.resume:
        raise UserError(f"{run}: holds checkpoints of an interrupted run; pass --resume to continue it, or remove the folder")
    run.mkdir(parents=True, exist_ok=True)
    return RunFolder(run, last)


def _write_config(cfg: TrainConfig, folder: RunFolder) -> None:
    """``config.yaml``: the resolved TrainConfig (rank 0 under a multi-process launch)."""
    if int(os.environ.get("RANK", "0")) == 0:
        _write_yaml(folder.path / "config.yaml", dataclasses.asdict(cfg))


def _lay_out(trainer, tokenizer, cfg: TrainConfig, planned: batching.Batching, *, rows: int) -> dict:
    """Step 8: the checked rows laid out in micro-batches (packed sequences checked once more and
    previewed); the layout printed and returned for ``data_summary``."""
    done = batching.apply(trainer, planned, max_length=cfg.max_length, batch_size=cfg.batch_size, seed=cfg.seed,
                          group_by_tokens=bool(cfg.group_by_tokens))
    if done.mode == "packed":
        check_packed(trainer, tokenizer, preview=cfg.preview_rows > 0, color=sys.stdout.isatty())
    layout = batching.describe(mode=done.mode, rows=rows, sequences=done.sequences, micro_batches=done.micro_batches,
                               batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, max_length=cfg.max_length,
                               world=trainer.args.world_size, why=done.why)
    print(layout.pop("text"))
    return layout


# --------------------------------------------------------------------------------------------
# Training and the run folder


def train(config: TrainConfig, *, callbacks: list | None = None) -> Path:
    """Fine-tune, write the run folder (``plug_run.json`` last), return its path."""
    prep = prepare(config, callbacks=callbacks)
    output, seconds = fit(prep)
    run = prep.folder.path
    if not prep.trainer.is_world_process_zero():
        # One run folder: under torchrun / accelerate launch only rank 0 writes the adapter and the record.
        return run
    save_model(prep.trainer, prep.tokenizer, run)
    metrics = run_metrics(prep.trainer, output, seconds)
    write_run_record(prep, metrics)
    print(f"done: {run} (loss {metrics.first_loss} -> {metrics.final_loss}, {metrics.steps} steps, "
          f"{seconds:.0f} s)")
    return run


def fit(prep: Prepared) -> tuple[Any, float]:
    """Train (``--resume``: from the last checkpoint); returns (the trainer's output, seconds).
    A CUDA out-of-memory error names a smaller preset."""
    import torch

    t0 = time.perf_counter()
    last = prep.folder.last_checkpoint
    resume_from = str(last) if (prep.cfg.resume and last) else None
    if prep.cfg.resume:
        print(f"resuming from {last}" if last else "--resume: no checkpoint yet, starting from step 0")
    try:
        output = prep.trainer.train(resume_from_checkpoint=resume_from)
    except torch.cuda.OutOfMemoryError:
        preset = prep.cfg.preset
        nxt = SMALLER.get(preset, "a smaller model or --batch-size 1 --max-length 1024")
        raise UserError(f"CUDA out of memory with preset {preset}; try --preset {nxt} (then --resume continues)") from None
    return output, time.perf_counter() - t0


def save_model(trainer, tokenizer, run: Path) -> None:
    """The adapter, and the tokenizer with the inference chat template, each saved whole or not at all."""
    _save_dir(trainer.model.save_pretrained, run / "adapter")
    tokenizer.chat_template = strip_generation_markers(tokenizer.chat_template)
    _save_dir(tokenizer.save_pretrained, run / "tokenizer")


def run_metrics(trainer, output, seconds: float) -> runs.RunMetrics:
    """The ``metrics`` of ``plug_run.json``: loss, steps, tokens (all processes), tokens/s, peak memory."""
    state = trainer.state
    tokens, trained = trainer.plug_tokens, trainer.plug_trained_tokens
    reserved = peak_reserved_mib()
    return runs.RunMetrics(
        train_loss=output.training_loss,
        final_loss=next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None),
        first_loss=next((h["loss"] for h in state.log_history if "loss" in h), None),
        steps=state.global_step,
        seconds=round(seconds, 2),
        tokens=tokens,
        trained_tokens=trained,
        tokens_per_s=tokens / seconds if seconds > 0 else None,
        trained_tokens_per_s=trained / seconds if seconds > 0 else None,
        peak_memory_mib=round(peak_memory_mib(), 1),
        peak_reserved_mib=round(reserved, 1) if reserved is not None else None,
        world_size=trainer.args.world_size,
        device=device_name(),
    )


def write_run_record(prep: Prepared, metrics: runs.RunMetrics) -> runs.RunRecord:
    """``plug_run.json``, written last: its presence means the run finished (``plug-lite export`` reads it)."""
    four_bit = prep.backend.four_bit
    record = runs.RunRecord(
        spec=prep.spec,
        base_model=prep.cfg.model,
        base_model_path=str(prep.base.local) if prep.base.local else None,
        base_name=prep.base.base_name,
        size_label=prep.base.size_label,
        backend=prep.backend.name,
        load_in_4bit=four_bit,
        bnb_4bit=runs.FourBit(compute_dtype=prep.backend.compute_dtype) if four_bit else None,
        chat_template_name=prep.chat.template_name,
        eos_token=prep.chat.eos,
        turn_tokens=prep.token_plan.to_dict(),
        config=dataclasses.asdict(prep.cfg),
        versions=versions(),
        data_summary=prep.data_summary,
        metrics=metrics,
        plug_lite_version=__version__,
        folder=prep.folder.path,
    )
    record.save()
    return record


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
