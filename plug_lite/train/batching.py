"""Step 8, batching: how training rows become micro-batches: packed by tokens, grouped by a token
budget, or one row per slot. :func:`plan` decides on the model with its adapter, before the
trainer is built (step 6 sorts unpacked rows by length when neither packing nor a token budget
applies); :func:`apply` lays the checked rows out in the trainer (step 7 has cut them).

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
  loaded model before packing (two rows packed vs. each alone).

When rows are not packed (the probe failed, or ``--no-packing``), :class:`TokenBudgetBatches` can
still fill micro-batches by tokens: rows sorted by length are cut into micro-batches of at most
``batch_size x max_length`` padded tokens (many short rows, or a few long ones), kept apart by the
ordinary attention mask (``--group-by-tokens``, on in the GPU presets). Without it, a micro-batch
is ``batch_size`` rows.

The labels (the completion-only mask) travel with the tokens unchanged; the collator additionally
masks each row's first token, which is always a prompt token. Torch and TRL are imported inside
the functions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Batching", "plan", "apply", "collator_can_go_padding_free", "packed_attention_ok", "pack", "packed_layout",
           "TokenBudgetBatches", "choose", "describe"]


@dataclass(frozen=True)
class Batching:
    """A run's batching: ``mode`` (see :func:`choose`), why, and what :func:`apply` made."""

    mode: str
    why: str = ""
    sequences: int | None = None  # packed sequences (mode "packed")
    micro_batches: int | None = None  # micro-batches per epoch (mode "tokens")


def plan(model, tokenizer, rows: list[dict], *, packing: bool, group_by_tokens: bool) -> Batching:
    """The batching ``model`` allows: packed when asked for and its attention keeps two packed rows
    apart (:func:`packed_attention_ok` on the first two of ``rows``), else as :func:`choose` says."""
    packed_ok, why = False, ""
    if packing:
        probe = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=False)
                 for r in rows[:2]]
        packed_ok, why = packed_attention_ok(model, probe, tokenizer.pad_token_id)
        if not packed_ok:
            why = f"not packed: {why}"
    return Batching(choose(packing=packing, packed_ok=packed_ok, group_by_tokens=group_by_tokens), why)


def apply(trainer, batching: Batching, *, max_length: int, batch_size: int, seed: int,
          group_by_tokens: bool) -> Batching:
    """Lay the trainer's rows out as ``batching`` says: packed sequences with a padding-free
    collator (when the trainer's collator is TRL's, else as if packing were off), or micro-batches
    by a token budget of ``batch_size x max_length``. Returns what was done."""
    if batching.mode == "packed" and not collator_can_go_padding_free(trainer.data_collator):
        why = f"not packed: the trainer's collator ({type(trainer.data_collator).__name__}) is not TRL's"
        batching = Batching(choose(packing=False, packed_ok=False, group_by_tokens=group_by_tokens), why)
    if batching.mode == "packed":
        trainer.train_dataset = pack(trainer.train_dataset, max_length)
        trainer.data_collator.padding_free = True
        trainer.padding_free = True
        return replace(batching, sequences=len(trainer.train_dataset))
    if batching.mode == "tokens":
        lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
        trainer.plug_batches = TokenBudgetBatches(lengths, batch_size * max_length, seed=seed,
                                                  world=trainer.args.world_size)
        return replace(batching, micro_batches=len(trainer.plug_batches))
    return batching


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


class TokenBudgetBatches:
    """A batch sampler (``DataLoader(batch_sampler=...)``): micro-batches of rows grouped by length,
    each at most ``budget`` padded tokens (rows x its longest row).

    Rows are sorted by length (ties broken at random per epoch) and cut greedily, so each micro-batch
    holds rows of about the same length; the order of the micro-batches is shuffled per epoch, except
    that the first epoch starts with the largest micro-batch (an out-of-memory error shows at step 1).
    The number of micro-batches is the same every epoch and a multiple of ``world`` (the processes
    share them round-robin, so every process makes the same number of steps): when needed, the
    micro-batches with most rows are halved. ``set_epoch`` is called by the Trainer through
    accelerate; without it every pass over the data counts as the next epoch."""

    def __init__(self, lengths: list[int], budget: int, *, seed: int = 0, world: int = 1) -> None:
        if not lengths:
            raise ValueError("no rows to batch")
        if world > len(lengths):
            raise ValueError(f"{len(lengths)} rows cannot feed {world} processes")
        self.lengths, self.budget, self.seed, self.world = list(lengths), int(budget), seed, world
        self.batch_size = None  # variable: accelerate then shards whole micro-batches
        self.drop_last = False
        self._epoch: int | None = None
        self._passes = 0
        self._count = len(self._cut(0))

    def _cut(self, epoch: int) -> list[list[int]]:
        import random

        rng = random.Random(self.seed * 100_003 + epoch)
        order = sorted(range(len(self.lengths)), key=lambda i: (-self.lengths[i], rng.random()))
        batches: list[list[int]] = []
        cur: list[int] = []
        for i in order:  # longest first: a micro-batch's longest row is its first
            if cur and (len(cur) + 1) * self.lengths[cur[0]] > self.budget:
                batches.append(cur)
                cur = []
            cur.append(i)
        batches.append(cur)
        while len(batches) % self.world:
            k = max(range(len(batches)), key=lambda j: len(batches[j]))
            if len(batches[k]) < 2:
                raise ValueError(f"{len(self.lengths)} rows cannot be cut into a multiple of {self.world} micro-batches")
            b = batches.pop(k)
            batches[k:k] = [b[: len(b) // 2], b[len(b) // 2:]]
        first = max(range(len(batches)), key=lambda j: len(batches[j]) * self.lengths[batches[j][0]])
        rest = [b for j, b in enumerate(batches) if j != first]
        rng.shuffle(rest)
        if epoch == 0:
            return [batches[first], *rest]
        rest.insert(rng.randrange(len(rest) + 1), batches[first])
        return rest

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    @property
    def sampler(self):
        """accelerate passes ``set_epoch`` on to ``batch_sampler.sampler`` when it wraps this one."""
        return self

    def __len__(self) -> int:
        return self._count

    def __iter__(self):
        epoch = self._epoch if self._epoch is not None else self._passes
        self._epoch = None
        self._passes += 1
        yield from self._cut(epoch)


def choose(*, packing: bool, packed_ok: bool, group_by_tokens: bool) -> str:
    """The batching a run gets: ``packed``, ``tokens`` (length-grouped micro-batches by a token
    budget) or ``rows`` (``batch_size`` rows per micro-batch)."""
    if packing and packed_ok:
        return "packed"
    return "tokens" if group_by_tokens else "rows"


def describe(*, mode: str, rows: int, batch_size: int, grad_accum: int, max_length: int, world: int = 1,
             sequences: int | None = None, micro_batches: int | None = None, why: str = "") -> dict[str, Any]:
    """What :mod:`plug_lite.train` prints and records about its batching (``mode`` from :func:`choose`)."""
    procs = f" x {world} processes" if world > 1 else ""
    budget = batch_size * max_length
    if mode == "packed":
        text = (f"batching: packed {rows} rows into {sequences} sequences of at most {max_length} tokens "
                f"(best-fit decreasing, padding-free; {why}); {batch_size} sequence(s) per micro-batch x {grad_accum} "
                f"accumulation{procs}: up to {budget * grad_accum * world:,} tokens per optimizer step")
    elif mode == "tokens":
        text = (f"batching: {rows} rows grouped by length into {micro_batches} micro-batches of at most {budget:,} "
                f"padded tokens (about {rows / (micro_batches or 1):.1f} rows each) x {grad_accum} accumulation"
                f"{procs}" + (f" ({why})" if why else ""))
    else:
        text = (f"batching: one row per slot, {batch_size} rows per micro-batch x {grad_accum} accumulation{procs}"
                + (f" ({why})" if why else ""))
    return {"mode": mode, "packed": mode == "packed", "rows": rows, "sequences": sequences,
            "micro_batches": micro_batches, "token_budget": budget if mode != "rows" else None,
            "batch_size": batch_size, "grad_accum": grad_accum, "max_length": max_length, "processes": world,
            "why": why, "text": text}
