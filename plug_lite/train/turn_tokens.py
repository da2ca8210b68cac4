"""Step 5, turn tokens: the chat template's turn tokens, and whether a base model ever learned them.

A tuned model stops when it emits the token its chat template writes after an assistant turn
(``<end_of_turn>``, ``<|im_end|>``). A *base* model may never have seen that token: its embedding
row (and its output row, tied or not) is still where initialisation and the "never the right
answer" softmax gradient left it. Such rows are easy to spot:

* **near zero** — rows of tokens added late and zero-initialised (e.g. reserved tokens);
* **collapsed** — never-seen tokens all receive the same push away from every prediction and
  end up pointing in one direction: the row's nearest neighbours are other unused tokens, almost
  parallel to it (cosine ≥ 0.95). Measured on the embedded Gemma-3-270M: ``<end_of_turn>`` and
  ``<start_of_turn>`` have cosine 0.995 with ``<unused…>`` rows and with rare pieces such as
  ``DrvGPIO``; an ordinary token's nearest neighbour is far below that.

LoRA on the linear layers cannot move such a row, so the model learns *where* a turn ends but
still picks a neighbour of the end-of-turn token (the demo's Gemma wrote ``stepToken``) and runs to
the token limit. :func:`plan` finds those rows so that training updates them too (PEFT's
``trainable_token_indices``: only the listed rows of the embedding and, for an untied model, of the
output head). Heavy imports (torch) happen inside the functions.

PEFT computes a trained-rows layer by copying the rows into the whole matrix on every forward, so
autograd forms the gradient of the whole matrix (for the 262,144 x 640 head of Gemma-3-270M, a
matrix product as large as the head's forward) and then keeps k rows of it. With
:func:`cheap_row_gradients` the frozen matrix is used as it is and only the k rows are computed
apart (``k`` columns of the logits, ``k`` embedding lookups): the same values, a gradient only where
it is needed. The adapter saved is PEFT's own, so merging and loading are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["MODES", "RowCheck", "TokenPlan", "template_tokens", "check_rows", "plan", "peft_indices", "cheap_row_gradients"]

MODES = ("auto", "all", "none")
#: An unused row's k-th nearest neighbour is at least this parallel to it.
COLLAPSE_COS = 0.95
#: ... for this many neighbours (a real token may have one near-duplicate, e.g. "▁the" / "the").
COLLAPSE_K = 8
#: A row whose norm is below this fraction of the median row norm was never trained.
ZERO_FRACTION = 0.1
_PROBE = "PLUGLITEPROBE"


@dataclass
class RowCheck:
    token: str
    id: int
    norm: float
    median_norm: float
    kth_neighbour_cos: float  # cosine with the COLLAPSE_K-th most similar other row
    untrained: bool
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TokenPlan:
    """What :func:`plan` decided: the rows to train (empty: none) and why."""

    mode: str
    ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    checks: list[RowCheck] = field(default_factory=list)
    tied: bool = True

    def to_dict(self) -> dict:
        return {"mode": self.mode, "ids": self.ids, "tokens": self.tokens, "tied": self.tied,
                "checks": [c.to_dict() for c in self.checks]}

    def summary(self) -> str:
        if not self.checks:
            return f"turn tokens ({self.mode}): none found in the chat template"
        looks = ", ".join(f"{c.token!r} {'untrained' if c.untrained else 'trained'} ({c.why})" for c in self.checks)
        if not self.ids:
            return f"turn tokens ({self.mode}): {looks}; no embedding rows trained"
        where = "embedding (tied output)" if self.tied else "embedding and output head"
        return f"turn tokens ({self.mode}): {looks}; training the {where} rows of {', '.join(self.tokens)}"


def template_tokens(tokenizer, eos: str) -> list[tuple[str, int]]:
    """The special tokens the chat template writes around turns, end-of-turn first:
    ``[(text, id), ...]`` (BOS and padding are not turn tokens)."""
    msgs = [{"role": "user", "content": _PROBE}, {"role": "assistant", "content": _PROBE}]
    ids = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=False)  # transformers 5 defaults to a dict
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= set((getattr(tokenizer, "added_tokens_decoder", None) or {}).keys())
    skip = {tokenizer.bos_token_id, tokenizer.pad_token_id}
    out: list[tuple[str, int]] = []
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    if eos_id is not None:
        out.append((eos, int(eos_id)))
    for i in ids:
        if i in special and i not in skip and all(i != j for _, j in out):
            out.append((tokenizer.convert_ids_to_tokens(int(i)), int(i)))
    return out


_CHUNK = 32768  # rows per float32 slice: a 262k x 640 matrix is never copied to float32 at once


def _row_norms(w):
    import torch

    return torch.cat([torch.linalg.vector_norm(w[a:a + _CHUNK].float(), dim=1) for a in range(0, w.shape[0], _CHUNK)])


def _kth_neighbour_cos(w, norms, idx: int) -> float:
    """Cosine of row ``idx`` with its COLLAPSE_K-th most similar other row."""
    import torch

    row, norm = w[idx].float(), norms[idx]
    cos = torch.cat([(w[a:a + _CHUNK].float() @ row) / (norms[a:a + _CHUNK].clamp_min(1e-12) * norm)
                     for a in range(0, w.shape[0], _CHUNK)])
    cos[idx] = -2.0
    return float(cos.topk(COLLAPSE_K).values[-1])


def check_rows(weight, tokens: list[tuple[str, int]]) -> list[RowCheck]:
    """Classify each token's row of ``weight`` (vocab x hidden) as trained or untrained."""
    import torch

    out = []
    with torch.no_grad():
        w = weight.detach()
        norms = _row_norms(w)
        median = float(norms.median())
        for text, idx in tokens:
            if idx >= w.shape[0]:
                continue
            norm = float(norms[idx])
            kth = _kth_neighbour_cos(w, norms, idx) if norm > 0 else 1.0
            if median > 0 and norm < ZERO_FRACTION * median:
                untrained, why = True, f"norm {norm:.3g} vs median {median:.3g}"
            elif kth >= COLLAPSE_COS:
                untrained, why = True, f"{COLLAPSE_K} rows at cosine >= {kth:.3f}"
            else:
                untrained, why = False, f"{COLLAPSE_K}th neighbour cosine {kth:.2f}"
            out.append(RowCheck(text, idx, round(norm, 4), round(median, 4), round(kth, 4), untrained, why))
    return out


def _tied(model) -> bool:
    inp, outp = model.get_input_embeddings(), model.get_output_embeddings()
    if outp is None:
        return True
    return inp.weight is outp.weight or inp.weight.data_ptr() == outp.weight.data_ptr()


def plan(model, tokenizer, eos: str, mode: str = "auto") -> TokenPlan:
    """Which turn-token rows to train: ``auto`` those that look untrained in the input embedding or
    the output head, ``all`` every turn token, ``none`` no row."""
    if mode not in MODES:
        from ..io import UserError

        raise UserError(f"unknown turn-token mode {mode!r}; expected one of {', '.join(MODES)}")
    tied = _tied(model)
    result = TokenPlan(mode=mode, tied=tied)
    if mode == "none":
        return result
    tokens = template_tokens(tokenizer, eos)
    checks = check_rows(model.get_input_embeddings().weight, tokens)
    if not tied:
        out_checks = {c.id: c for c in check_rows(model.get_output_embeddings().weight, tokens)}
        for c in checks:
            o = out_checks.get(c.id)
            if o is not None and o.untrained and not c.untrained:
                c.untrained, c.why = True, f"output row: {o.why}"
    result.checks = checks
    chosen = [c for c in checks if c.untrained or mode == "all"]
    result.ids = [c.id for c in chosen]
    result.tokens = [c.token for c in chosen]
    return result


def peft_indices(model, ids: list[int]) -> Any:
    """``LoraConfig(trainable_token_indices=...)`` for ``ids``: the list alone when the output head
    is tied to the embedding (PEFT then ties the head's rows), else the rows of both modules."""
    if not ids:
        return None
    if _tied(model):
        return list(ids)
    inp, outp = model.get_input_embeddings(), model.get_output_embeddings()
    names = {id(m): n for n, m in model.named_modules()}
    return {names[id(inp)].split(".")[-1]: list(ids), names[id(outp)].split(".")[-1]: list(ids)}


def _fast_forward(layer, x, *args, **kwargs):
    """A trainable-tokens layer's output with the gradient computed for its trained rows only."""
    import torch
    import torch.nn.functional as F

    adapters = [a for a in layer.active_adapters if a in layer.token_indices]
    if layer.disable_adapters or not adapters or layer.merged:
        return layer._plug_lite_forward(x, *args, **kwargs)
    base = layer.base_layer
    # The frozen matrix as it is: autograd forms no gradient for it, only for the input of a head.
    # (Gemma's embedding layer applies its scale in its own forward.)
    out = base(x, *args, **kwargs)
    for name in adapters:
        idx = torch.as_tensor(layer.token_indices[name], device=out.device)
        rows = layer.trainable_tokens_delta[name]
        if isinstance(base, torch.nn.Embedding):
            slot = torch.full((base.num_embeddings,), -1, dtype=torch.long, device=out.device)
            slot[idx] = torch.arange(len(idx), device=out.device)
            s = slot[x]
            hit = s >= 0
            if not bool(hit.any()):
                continue
            new = F.embedding(s.clamp(min=0), rows)
            scale = layer._get_embed_scale()
            if scale is not None:
                new = new * scale.to(new.dtype)
            out = torch.where(hit.unsqueeze(-1), new.to(out.dtype), out)
        elif isinstance(base, torch.nn.Linear):
            cols = F.linear(x.to(rows.dtype), rows)
            out = out.index_copy(-1, idx, cols.to(out.dtype))
        else:
            return layer._plug_lite_forward(x, *args, **kwargs)
    return out


def cheap_row_gradients(model) -> int:
    """Switch every PEFT trainable-tokens layer of ``model`` to :func:`_fast_forward` (same outputs,
    gradients for the trained rows only). Returns how many layers were switched."""
    import types

    try:
        from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer) and not hasattr(module, "_plug_lite_forward"):
            module._plug_lite_forward = module.forward
            module.forward = types.MethodType(_fast_forward, module)
            n += 1
    return n
