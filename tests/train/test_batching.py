"""Token-budget batching (plug_lite.train.batching, train --packing) on the tiny model: a packed,
padding-free batch gives the same loss as the same rows padded; the mask survives packing; the
probe refuses a model whose attention lets packed rows see each other."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from plug_lite import train as T  # noqa: E402
from plug_lite.train import batching  # noqa: E402


def _prepare(model: Path, rows: Path, out: Path, packing: bool):
    cfg = T.TrainConfig(model=str(model), data=str(rows), output_dir=str(out), preset="cpu-tiny", max_steps=2,
                        save_steps=2, preview_rows=1, packing=packing, max_length=256)
    return T.prepare(cfg)


def _loss_of_everything(prep) -> tuple[float, int]:
    """The loss of the trainer's whole dataset collated as one batch by its own collator."""
    tr = prep.trainer
    feats = [tr.train_dataset[i] for i in range(len(tr.train_dataset))]
    feats = [{k: v for k, v in f.items() if k in ("input_ids", "labels", "seq_lengths")} for f in feats]
    batch = tr.data_collator(feats)
    trained = int((batch["labels"][..., 1:] != -100).sum())
    model = tr.model
    model.eval()
    with torch.no_grad():
        out = model(**batch, use_cache=False)  # as in training: no KV cache
    return float(out.loss), trained


def test_packed_batch_has_the_loss_of_the_same_rows_padded(tiny_model, eight_rows_file, tmp_path, capsys):
    plain = _prepare(tiny_model, eight_rows_file, tmp_path / "plain", packing=False)
    packed = _prepare(tiny_model, eight_rows_file, tmp_path / "packed", packing=True)
    out = capsys.readouterr().out
    layout = packed.data_summary["batching"]
    assert layout["packed"] is True and layout["rows"] == 8 and layout["sequences"] < 8
    assert "relative difference" in layout["why"]
    assert plain.data_summary["batching"]["packed"] is False
    assert "batching: packed 8 rows into" in out and "padding-free" in out
    assert "row boundary: attention does not cross it" in out  # the mask preview shows the packed layout
    seq = packed.trainer.train_dataset[0]
    assert sum(seq["seq_lengths"]) == len(seq["input_ids"]) <= 256
    # same rows, same trained tokens, same mean loss (the LoRA starts as a no-op, the weights are equal)
    loss_plain, trained_plain = _loss_of_everything(plain)
    loss_packed, trained_packed = _loss_of_everything(packed)
    assert trained_packed == trained_plain > 0
    assert loss_packed == pytest.approx(loss_plain, rel=1e-5, abs=1e-6)


def test_packed_training_run_records_its_batching(tiny_model, eight_rows_file, tmp_path):
    run = T.train(T.TrainConfig(model=str(tiny_model), data=str(eight_rows_file), output_dir=str(tmp_path / "run"),
                                preset="cpu-tiny", max_steps=2, save_steps=2, preview_rows=0, packing=True))
    rec = json.loads((run / "plug_run.json").read_text())
    assert rec["data_summary"]["batching"]["packed"] is True and rec["config"]["packing"] is True
    m = rec["metrics"]
    assert m["tokens"] > m["trained_tokens"] > 0 and m["trained_tokens_per_s"] > 0 and m["world_size"] == 1
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2] and all(l["trained_tokens_per_s"] > 0 for l in lines)


class _LeakyLM(torch.nn.Module):
    """Logits from a running sum of the embeddings over the whole flat sequence: every position
    sees every earlier token, whatever ``position_ids`` say (an attention that ignores packing)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(1000, 8)
        self.head = torch.nn.Linear(8, 1000)

    def forward(self, input_ids, position_ids=None, **kw):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.head(self.emb(input_ids).cumsum(1)))


def test_probe_refuses_attention_that_crosses_rows():
    ok, why = batching.packed_attention_ok(_LeakyLM(), [[1, 2, 3, 4, 5], [6, 7, 8, 9]], pad_token_id=0)
    assert not ok and "relative difference" in why


def test_probe_accepts_the_tiny_qwen2(tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    ok, why = batching.packed_attention_ok(model, [[10, 20, 30, 40, 50, 60], [70, 80, 90, 100]], pad_token_id=0)
    assert ok, why


# --- micro-batches by tokens (rows not packed) ---------------------------------------------------

def _padded(batch: list[int], lengths: list[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_token_budget_batches_cover_every_row_within_the_budget(world):
    import random

    rng = random.Random(7)
    lengths = [rng.choice([30, 60, 200, 240, 256]) + rng.randrange(20) for _ in range(101)]
    sampler = batching.TokenBudgetBatches(lengths, 512, seed=3, world=world)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) and len(batches) % world == 0
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every row once
        assert all(_padded(b, lengths) <= 512 for b in batches)
        epochs.append(batches)
    # short rows share micro-batches, long ones do not: fewer micro-batches than rows
    assert len(epochs[0]) < len(lengths) / 2
    # epoch 0 starts with its largest micro-batch; later epochs are reordered
    assert _padded(epochs[0][0], lengths) == max(_padded(b, lengths) for b in epochs[0])
    assert epochs[1] != epochs[0] and epochs[2] != epochs[1]
    # the same seed and epoch give the same micro-batches (every process computes the same ones)
    again = batching.TokenBudgetBatches(lengths, 512, seed=3, world=world)
    again.set_epoch(1)
    assert list(again) == epochs[1]
    # without set_epoch, each pass over the data is the next epoch
    fresh = batching.TokenBudgetBatches(lengths, 512, seed=3, world=world)
    assert [list(fresh), list(fresh)] == epochs[:2]


def test_token_budget_batches_refuse_impossible_layouts():
    with pytest.raises(ValueError, match="cannot feed 3 processes"):
        batching.TokenBudgetBatches([10, 10], 100, world=3)
    with pytest.raises(ValueError, match="multiple of 2"):
        batching.TokenBudgetBatches([100, 100, 100], 100, world=2)  # three rows, each a micro-batch


def test_batching_choice():
    assert batching.choose(packing=True, packed_ok=True, group_by_tokens=True) == "packed"
    # packing asked for, but the attention would mix rows: by tokens when the preset says so
    assert batching.choose(packing=True, packed_ok=False, group_by_tokens=True) == "tokens"
    assert batching.choose(packing=True, packed_ok=False, group_by_tokens=False) == "rows"
    assert batching.choose(packing=False, packed_ok=False, group_by_tokens=True) == "tokens"
    assert batching.choose(packing=False, packed_ok=True, group_by_tokens=False) == "rows"


def test_training_by_tokens_feeds_every_row_in_budgeted_micro_batches(tiny_model, eight_rows_file, tmp_path, capsys):
    cfg = T.TrainConfig(model=str(tiny_model), data=str(eight_rows_file), output_dir=str(tmp_path / "run"), preset="cpu-tiny",
                        max_steps=3, save_steps=3, preview_rows=0, packing=False, group_by_tokens=True,
                        batch_size=2, max_length=256)
    prep = T.prepare(cfg)
    out = capsys.readouterr().out
    layout = prep.data_summary["batching"]
    assert layout["mode"] == "tokens" and layout["token_budget"] == 512 and not layout["packed"]
    assert f"8 rows grouped by length into {layout['micro_batches']} micro-batches of at most 512 padded tokens" in out
    assert layout["micro_batches"] < 8  # the tiny rows are short: several share a micro-batch
    # the trainer's own data loader: padded micro-batches within the budget, every row once, labels intact
    want = sum(sum(1 for t in ex["labels"][1:] if t != -100) for ex in prep.trainer.train_dataset)
    sizes, rows, trained = [], 0, 0
    for batch in prep.trainer.get_train_dataloader():
        sizes.append(batch["input_ids"].numel())
        rows += batch["input_ids"].shape[0]
        trained += int((batch["labels"][:, 1:] != -100).sum())
    assert max(sizes) <= 512 and rows == 8 and len(sizes) == layout["micro_batches"]
    assert trained == want > 0
    run = T.train(dataclasses.replace(cfg, output_dir=str(tmp_path / "trained")))
    rec = json.loads((run / "plug_run.json").read_text())
    assert rec["data_summary"]["batching"]["mode"] == "tokens" and rec["config"]["group_by_tokens"] is True
    assert rec["metrics"]["steps"] == 3 and rec["metrics"]["trained_tokens"] > 0


def test_resumed_run_by_tokens_sees_the_same_micro_batches(tiny_model, eight_rows_file, tmp_path):
    """Interrupted in the second epoch and resumed from a checkpoint taken in it: the resumed steps
    see the micro-batches of that epoch (the Trainer's set_epoch reaches the batch sampler)."""
    from transformers import TrainerCallback

    base = dict(model=str(tiny_model), data=str(eight_rows_file), preset="cpu-tiny", preview_rows=0,
                packing=False, group_by_tokens=True, batch_size=1, max_length=256)
    sampler = T.prepare(T.TrainConfig(output_dir=str(tmp_path / "probe"), **base)).trainer.plug_batches
    micro = len(sampler)
    assert 1 < micro < 8  # several rows per micro-batch
    ckpt, stop, last = micro + 1, micro + 2, micro + 3  # a checkpoint inside epoch 2, stopped after it
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        orders.append([sorted(b) for b in sampler])
    assert orders[0][1:3] != orders[1][1:3]  # the resumed steps' micro-batches differ between the epochs

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == stop:
                raise KeyboardInterrupt

    def per_step(run: Path) -> dict[int, tuple[int, int]]:
        """(tokens, trained tokens) of each step's micro-batch. The counters are cumulative over the
        whole run: a resume restores them from the checkpoint and drops the log lines of later steps."""
        out, prev = {}, (0, 0)
        for line in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()):
            now = (line["tokens"], line["trained_tokens"])
            assert line["step"] not in out  # each step logged once, redone steps included
            out[line["step"]] = (now[0] - prev[0], now[1] - prev[1])
            prev = now
        return out

    base.update(max_steps=last, save_steps=ckpt)
    straight = T.train(T.TrainConfig(output_dir=str(tmp_path / "straight"), **base))
    cut = T.TrainConfig(output_dir=str(tmp_path / "cut"), **base)
    with pytest.raises(KeyboardInterrupt):
        T.train(cut, callbacks=[Stop()])
    resumed = T.train(dataclasses.replace(cut, resume=True))
    a, b = per_step(straight), per_step(resumed)
    assert sorted(b) == list(range(1, last + 1))
    # the steps trained after the resume saw the micro-batches of the uninterrupted run (the rows of
    # each micro-batch have their own token counts)
    assert [b[s] for s in range(ckpt + 1, last + 1)] == [a[s] for s in range(ckpt + 1, last + 1)]
