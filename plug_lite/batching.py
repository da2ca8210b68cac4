"""How training rows become micro-batches: packed by tokens, or one row per slot.

PLUG rows are short (instruction + English pivot + target answer: a few hundred tokens). Batched
one row per slot, a GPU micro-batch holds a few hundred real tokens and most of the step is fixed
cost: on an H200, a Qwen2.5-1.5B-shaped QLoRA step cost ~0.6 s per micro-batch whether it held
400 or 2,000 tokens (583 tokens/s on the sample rows). Packing fills each micro-batch instead:

* rows are grouped best-fit-decreasing into sequences of at most ``max_length`` tokens (TRL's
  ``pack_dataset(strategy="bfd")``, which keeps every row whole);
* the collator runs *padding-free* (TRL's ``DataCollatorForLanguageModeling(padding_free=True)``):
  the micro-batch is one flat sequence whose ``position_ids`` restart at 0 at each row, so a
  micro-batch of ``batch_size`` packed sequences carries about ``batch_size x max_length`` real
  tokens and no padding;
* rows stay apart inside a sequence because the attention keeps them apart: flash-attention reads
  the sequence boundaries, and transformers (4.53+) builds a block-diagonal mask from restarting
  ``position_ids`` for SDPA and eager attention (only without a KV cache: training passes
  ``use_cache=False``, and so does the probe). :func:`packed_attention_ok` checks that on the
  loaded model before packing (two rows packed vs. each alone); when it fails, the rows are batched
  one per slot, grouped by length so that little padding is left.

The labels (the completion-only mask) travel with the tokens unchanged; the collator additionally
masks each row's first token, which is always a prompt token. Torch and TRL are imported inside
the functions.
"""

from __future__ import annotations

from typing import Any

__all__ = ["collator_can_go_padding_free", "packed_attention_ok", "pack", "packed_layout", "describe"]


def _collator(pad_token_id: int, padding_free: bool):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=padding_free)


def collator_can_go_padding_free(collator) -> bool:
    """Whether ``collator`` is TRL's language-modeling collator, which flattens a batch and builds
    restarting ``position_ids`` when its ``padding_free`` is set (a backend may bring its own)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return isinstance(collator, DataCollatorForLanguageModeling) and hasattr(collator, "padding_free")


def packed_attention_ok(model, rows: list[list[int]], pad_token_id: int, *, tolerance: float = 0.02) -> tuple[bool, str]:
    """Whether ``model`` keeps two packed rows apart: the second row's logits packed after the first
    equal its logits alone (relative error below ``tolerance``). Returns (ok, what was measured)."""
    import torch

    a, b = (list(r[:48]) for r in rows[:2])
    if len(a) < 2 or len(b) < 2:
        return False, "fewer than two usable rows to probe"
    device = next(p.device for p in model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([b], device=device), use_cache=False).logits[0, :, :].float()
            batch = _collator(pad_token_id, True)([{"input_ids": a}, {"input_ids": b}])
            batch = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items() if k != "labels"}
            packed = model(**batch, use_cache=False).logits[0, len(a):, :].float()
    except Exception as e:  # an attention implementation that refuses position_ids-only batches
        return False, f"the packed forward failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
    finally:
        model.train(was_training)
    err = float((packed - alone).abs().max() / alone.abs().max().clamp_min(1e-6))
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None) or "?"
    return err < tolerance, f"{attn} attention, packed vs alone max relative difference {err:.2g}"


def pack(dataset, max_length: int):
    """``dataset`` (``input_ids``, ``labels``) packed best-fit-decreasing into sequences of at most
    ``max_length`` tokens, with the ``seq_lengths`` column the padding-free collator reads."""
    from trl import pack_dataset

    return pack_dataset(dataset.select_columns(["input_ids", "labels"]), max_length, strategy="bfd")


def packed_layout(example: dict) -> list[tuple[int, int]]:
    """(start, end) token spans of the rows inside one packed sequence."""
    out, start = [], 0
    for n in example["seq_lengths"]:
        out.append((start, start + n))
        start += n
    return out


def describe(*, packed: bool, rows: int, sequences: int | None, batch_size: int, grad_accum: int, max_length: int,
             world: int = 1, why: str = "") -> dict[str, Any]:
    """What :mod:`plug_lite.train` prints and records about its batching choice."""
    if packed:
        tokens = batch_size * max_length * grad_accum * world
        text = (f"batching: packed {rows} rows into {sequences} sequences of at most {max_length} tokens "
                f"(best-fit decreasing, padding-free; {why}); {batch_size} sequence(s) per micro-batch x {grad_accum} "
                f"accumulation{f' x {world} processes' if world > 1 else ''}: up to {tokens:,} tokens per optimizer step")
    else:
        text = (f"batching: one row per slot, {batch_size} rows per micro-batch x {grad_accum} accumulation"
                f"{f' x {world} processes' if world > 1 else ''}" + (f" ({why})" if why else ""))
    return {"packed": packed, "rows": rows, "sequences": sequences, "batch_size": batch_size, "grad_accum": grad_accum,
            "max_length": max_length, "processes": world, "why": why, "text": text}
