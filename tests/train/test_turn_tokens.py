"""plug_lite.train.turn_tokens: finding turn tokens whose rows a base model never trained, and training
those rows cheaply. A planted collapsed / zero row stands in for a base model's untrained
``<end_of_turn>`` (measured on Gemma-3-270M: cosine 0.995 with ``<unused…>`` rows)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from plug_lite.train import turn_tokens  # noqa: E402

EOT = "<|im_end|>"


def _load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32), AutoTokenizer.from_pretrained(str(path))


def plant_collapsed(model, ids: list[int], n_unused: int = 40, seed: int = 0) -> None:
    """Make ``ids`` look like never-trained rows: parallel (up to noise) to a cluster of other rows."""
    g = torch.Generator().manual_seed(seed)
    w = model.get_input_embeddings().weight
    direction = torch.randn(w.shape[1], generator=g)
    direction = direction / direction.norm() * float(w.detach().norm(dim=1).median())
    others = torch.randperm(100_000, generator=g)[:n_unused] + 10_000
    with torch.no_grad():
        for i in [*ids, *others.tolist()]:
            w[i] = direction + 0.01 * direction.norm() * torch.randn(w.shape[1], generator=g) / w.shape[1] ** 0.5


def test_template_tokens_of_chatml(tiny_model):
    _, tok = _load(tiny_model)
    toks = turn_tokens.template_tokens(tok, EOT)
    names = [t for t, _ in toks]
    assert names[0] == EOT and "<|im_start|>" in names
    assert all(isinstance(i, int) for _, i in toks)


def test_random_rows_are_trained_and_planted_ones_are_not(tiny_model):
    model, tok = _load(tiny_model)
    clean = turn_tokens.plan(model, tok, EOT, "auto")
    assert clean.ids == [] and all(not c.untrained for c in clean.checks)
    eot = tok.convert_tokens_to_ids(EOT)
    start = tok.convert_tokens_to_ids("<|im_start|>")
    plant_collapsed(model, [eot])
    with torch.no_grad():
        model.get_input_embeddings().weight[start] = 0.0
    p = turn_tokens.plan(model, tok, EOT, "auto")
    by_id = {c.id: c for c in p.checks}
    assert by_id[eot].untrained and "cosine" in by_id[eot].why
    assert by_id[start].untrained and "norm" in by_id[start].why
    assert sorted(p.ids) == sorted([eot, start]) and p.tied
    assert turn_tokens.plan(model, tok, EOT, "none").ids == []
    assert set(turn_tokens.plan(model, tok, EOT, "all").ids) >= {eot, start}
    assert "untrained" in p.summary() and repr(EOT) in p.summary()


def test_untied_output_row_is_checked_too(tmp_path):
    from plug_lite.models import tiny_qwen2

    model, tok = _load(tiny_qwen2(tied=False))
    assert not turn_tokens.plan(model, tok, EOT, "auto").tied
    eot = tok.convert_tokens_to_ids(EOT)
    with torch.no_grad():
        model.get_output_embeddings().weight[eot] = 0.0  # only the head's row is untrained
    p = turn_tokens.plan(model, tok, EOT, "auto")
    assert p.ids == [eot] and "output row" in p.checks[0].why
    idx = turn_tokens.peft_indices(model, p.ids)
    assert idx == {"embed_tokens": [eot], "lm_head": [eot]}


def test_unknown_mode_is_a_user_error(tiny_model):
    from plug_lite.io import UserError

    model, tok = _load(tiny_model)
    with pytest.raises(UserError, match="turn-token mode"):
        turn_tokens.plan(model, tok, EOT, "sometimes")


@pytest.mark.parametrize("tied", [True, False])
def test_cheap_row_gradients_give_peft_loss_and_gradients(tied):
    """Same logits, loss and row gradients as PEFT's own trainable-tokens forward."""
    from peft import LoraConfig, get_peft_model

    from plug_lite.models import tiny_qwen2

    path = tiny_qwen2(tied=tied)
    ids = [151645, 151644, 872]  # <|im_end|>, <|im_start|>, an ordinary token
    x = torch.tensor([[151644, 872, 198, 100, 200, 151645, 198, 872, 300, 151645]])
    labels = x.clone()
    labels[0, :3] = -100

    def run(cheap: bool):
        torch.manual_seed(0)
        model, _ = _load(path)
        cfg = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                         trainable_token_indices=turn_tokens.peft_indices(model, ids))
        pm = get_peft_model(model, cfg)
        with torch.no_grad():  # move the rows away from the base so the trained values matter
            for name, p in pm.named_parameters():
                if "trainable_tokens_delta" in name:
                    p.add_(0.05 * torch.randn_like(p))
        if cheap:
            assert turn_tokens.cheap_row_gradients(pm) == 2  # the embedding and the head
        out = pm(input_ids=x, labels=labels)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in pm.named_parameters() if "trainable_tokens_delta" in n}
        return out.logits.detach(), out.loss.detach(), grads

    logits_a, loss_a, grads_a = run(False)
    logits_b, loss_b, grads_b = run(True)
    assert torch.allclose(logits_a, logits_b, atol=1e-5)
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == (1 if tied else 2)
    for k in grads_a:
        assert grads_a[k].abs().sum() > 0
        assert torch.allclose(grads_a[k], grads_b[k], atol=1e-6, rtol=1e-4), k


@pytest.fixture(scope="module")
def planted_base(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with its <|im_end|> row collapsed into a cluster, as in a base model that never
    saw chat turns."""
    model, tok = _load(tiny_model)
    plant_collapsed(model, [tok.convert_tokens_to_ids(EOT)])
    out = tmp_path_factory.mktemp("planted") / "base"
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def rows_run(planted_base, rows_file, tmp_path_factory) -> Path:
    from plug_lite import train as T

    d = tmp_path_factory.mktemp("rowsrun")
    cfg = T.TrainConfig(model=str(planted_base), data=str(rows_file), output_dir=str(d / "run"), preset="cpu-tiny",
                        max_steps=3, save_steps=3, preview_rows=0, lr=1e-2)
    return T.train(cfg)


def test_training_updates_the_untrained_row_and_export_carries_it(rows_run, planted_base, tmp_path):
    import json

    from safetensors.torch import load_file

    from plug_lite import export, gguf_meta

    rec = json.loads((rows_run / "plug_run.json").read_text())
    _, tok = _load(planted_base)
    eot = tok.convert_tokens_to_ids(EOT)
    assert rec["turn_tokens"]["ids"] == [eot] and rec["turn_tokens"]["mode"] == "auto"
    adapter = load_file(str(rows_run / "adapter" / "adapter_model.safetensors"))
    delta_key = next(k for k in adapter if "trainable_tokens_delta" in k)
    trained = adapter[delta_key][0]
    base_model, _ = _load(planted_base)
    base_row = base_model.get_input_embeddings().weight[eot].detach()
    assert (trained - base_row).abs().max() > 1e-3  # the row moved

    report = export.main(rows_run, out_dir=tmp_path / "gguf", quants=["F16"], n_prompts=1, max_new_tokens=8,
                         stop_budget=16)
    merged, _ = _load(rows_run / "merged")
    merged_row = merged.get_input_embeddings().weight[eot].detach()
    assert torch.allclose(merged_row, trained, atol=1e-6)
    assert torch.allclose(merged.get_output_embeddings().weight[eot].detach(), trained, atol=1e-6)  # still tied
    f16 = report.files["F16"].path
    (gguf_row,) = gguf_meta.read_rows(f16, "token_embd.weight", [eot])
    assert torch.allclose(torch.tensor(gguf_row), trained, atol=2e-3, rtol=1e-3)
    (other,) = gguf_meta.read_rows(f16, "token_embd.weight", [eot - 1])  # an untouched row stays the base's
    assert torch.allclose(torch.tensor(other), base_model.get_input_embeddings().weight[eot - 1].detach(), atol=2e-3, rtol=1e-3)
    # the adapter GGUF would lose the row: refused, with the reason, and no file written
    assert report.adapter_gguf is None and "cannot carry" in report.adapter_not_written
    assert not list((tmp_path / "gguf").glob("*LoRA*"))


def test_stops_check_flags_a_model_that_never_ends_its_turn(rows_run):
    import json

    report = json.loads((rows_run / "export_report.json").read_text())
    stops = report["verify"]["stops"]
    # a random tiny model trained 3 steps never emits <|im_end|> first: every answer hits the budget
    assert set(stops) == {"merged", "F16"}
    for st in stops.values():
        assert st["stopped"] == 0 and st["prompts"] == 1 and st["tokens"] == [16]
    assert any("did not end its turn within 16 tokens" in w for w in report["verify"]["warnings"])
