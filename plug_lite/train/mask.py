"""Step 7, the loss mask, checked on the trainer's own processed rows before any step is taken.

TRL 1.16 trains conversational prompt-completion rows on the completion only, and tokenizes the
rows itself; we read its processed dataset, print a preview of the mask (trained text in
``[[...]]``, green on a terminal) and refuse to train when a row trains nothing, when its
end-of-turn token is not trained, when padding (or a padding-free collator) would mask it, or when
``max_length`` would cut the target-language section of a PLUG row (found with
:func:`plug_lite.formats.parse`). Then the rows are cut to ``max_length`` (``--drop-long-rows``
drops them instead).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .. import formats
from ..io import UserError
from . import batching
from .config import TrainConfig
from .template import ChatFormat

__all__ = ["MaskReport", "check_loss_mask", "mask_preview", "check_mask", "check_collated", "check_packed"]


@dataclass(frozen=True)
class MaskReport:
    """What the checks counted over the rows that train."""

    rows: int
    truncated: int  # rows cut at max_length
    trained_tokens: int
    tokens: int
    dropped_long_rows: int | None = None  # None: --drop-long-rows is off

    @property
    def trained_share(self) -> float:
        return self.trained_tokens / max(1, self.tokens)

    def summary(self) -> dict:
        """The fields of ``plug_run.json``'s ``data_summary``."""
        out = {} if self.dropped_long_rows is None else {"dropped_long_rows": self.dropped_long_rows}
        out.update(truncated_rows=self.truncated, trained_tokens=self.trained_tokens, tokens=self.tokens,
                   trained_share=round(self.trained_share, 4))
        return out


def check_loss_mask(trainer, tokenizer, cfg: TrainConfig, chat: ChatFormat, rows: list[dict]) -> MaskReport:
    """Check the trainer's processed rows (printing a preview of ``cfg.preview_rows``), then leave
    them in the trainer cut to ``cfg.max_length``. ``rows``: the rows as loaded (their format and
    languages)."""
    processed, dropped, L = trainer.train_dataset, None, cfg.max_length
    if cfg.drop_long_rows:
        processed, dropped = _drop_long_rows(processed, L)
    color = sys.stdout.isatty()
    for i in range(min(cfg.preview_rows, len(processed))):
        ex = processed[i]
        legend = "green" if color else "[[...]]"
        print(f"--- mask preview, row {ex.get('id', i)} ({len(ex['input_ids'])} tokens; trained text in {legend}) ---")
        print(mask_preview(tokenizer, ex["input_ids"], ex["labels"], color=color))
    stats = check_mask(processed, tokenizer, eos_id=chat.eos_id, eos=chat.eos, max_length=L,
                       rows_meta={r["id"]: r for r in rows})
    check_collated(trainer, processed, eos_id=chat.eos_id)
    report = MaskReport(stats["rows"], stats["truncated"], stats["trained_tokens"], stats["tokens"], dropped)
    print(
        f"mask: {report.rows} rows, {report.truncated} truncated at max_length {L}, "
        f"{report.trained_tokens} trained of {report.tokens} tokens ({report.trained_share:.0%}); "
        f"EOS {chat.eos} trained in every row"
    )
    trainer.train_dataset = processed.map(lambda ex: {"input_ids": ex["input_ids"][:L], "labels": ex["labels"][:L]})
    return report


def _drop_long_rows(dataset, max_length: int):
    """(``dataset`` without the rows longer than ``max_length``, how many were dropped)."""
    n_before = len(dataset)
    kept = dataset.filter(lambda ex: len(ex["input_ids"]) <= max_length)
    print(f"dropped {n_before - len(kept)} of {n_before} rows longer than max_length {max_length}")
    if not len(kept):
        raise UserError(f"every row is longer than max_length {max_length}; raise --max-length")
    return kept, n_before - len(kept)


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

