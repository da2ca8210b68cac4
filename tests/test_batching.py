"""Token-budget batching (plug_lite.batching, train --packing) on the tiny model: a packed,
padding-free batch gives the same loss as the same rows padded; the mask survives packing; the
probe refuses a model whose attention lets packed rows see each other."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))

from test_train import QUESTIONS, plug_row, write_rows  # noqa: E402

from plug_lite import batching  # noqa: E402
from plug_lite import train as T  # noqa: E402


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rows")
    return write_rows(d / "rows.jsonl", [plug_row(i, *q) for i, q in enumerate(QUESTIONS * 2)])


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


def test_packed_batch_has_the_loss_of_the_same_rows_padded(tiny_model, rows_file, tmp_path, capsys):
    plain = _prepare(tiny_model, rows_file, tmp_path / "plain", packing=False)
    packed = _prepare(tiny_model, rows_file, tmp_path / "packed", packing=True)
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


def test_packed_training_run_records_its_batching(tiny_model, rows_file, tmp_path):
    run = T.train(T.TrainConfig(model=str(tiny_model), data=str(rows_file), output_dir=str(tmp_path / "run"),
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
