"""Check 3 of step 3, greedy parity: the same greedy answers from the merged transformers model, the
base model and every exported file, compared over their first ``max_new_tokens`` tokens.

* the reference GGUF (F16) against the merged model: identical text expected; a warning otherwise;
* every quantized file against the merged model *and* the base: a small fine-tune can be rounded
  away by quantization (see NOTES), so on the prompts where the merged model answers differently
  from the base, a file that answers more like the base gets a warning naming what to ship instead;
* the adapter GGUF applied on the base GGUF (``--with-base``) against the merged model.

Agreement is the common prefix over the longer answer (1.0: identical). transformers runs in
float32 on the CPU and in the checkpoint's own dtype on a GPU; llama.cpp with a 1024-token context.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..engine import Greedy, LlamaEngine
from ..runs import GreedyScore
from .prompts import HeldOut, Reference

__all__ = ["gguf_answers", "hf_answers", "merged_and_base_answers", "agree", "Parity", "section"]


def gguf_answers(path: Path, prompts: list[list[int]], max_new: int, stop: set[int], *, lora: Path | None = None):
    """Greedy answers of a GGUF (with an adapter GGUF over it) to each prompt."""
    eng = LlamaEngine(path, ctx=1024, lora=lora)
    try:
        return [eng.greedy(ids, max_new, stop) for ids in prompts]
    finally:
        eng.close()


def hf_answers(model, prompt_ids: list[list[int]], max_new: int, eos: int, pad: int) -> list[Greedy]:
    """Greedy answers of a transformers model, cut at the end of turn (``stopped`` set)."""
    import torch

    outs = []
    with torch.no_grad():
        for ids in prompt_ids:
            x = torch.tensor([ids], device=model.device)
            y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new,
                               eos_token_id=eos, pad_token_id=pad)
            gen = Greedy(y[0, len(ids):].tolist())
            if eos in gen:
                del gen[gen.index(eos):]
                gen.stopped = True
            outs.append(gen)
    return outs


def merged_and_base_answers(merged_dir: Path, base_dir: Path, held: HeldOut, ref: Reference, budget: int,
                            max_new_tokens: int) -> tuple[list[Greedy], list[Greedy]]:
    """The merged model's answers up to ``budget`` tokens (the stops check reads them whole), then
    the base's up to ``max_new_tokens``; one model in memory at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    # float32 on the CPU; on a GPU the checkpoint's own dtype (a float32 file stays float32)
    gpu = torch.cuda.is_available()
    hf_kw = {"dtype": "auto", "device_map": "cuda"} if gpu else {"dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), **hf_kw)
    merged = hf_answers(model, held.ids, budget, ref.eot_id, ref.pad_id)
    del model
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), **hf_kw)
    base = hf_answers(model, held.ids, max_new_tokens, ref.eot_id, ref.pad_id)
    del model
    return merged, base


def agree(a: list[int], b: list[int]) -> float:
    """Common-prefix length over the longer length (1.0: identical)."""
    if not a and not b:
        return 1.0
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / max(len(a), len(b))


@dataclass
class Parity:
    """The report's ``greedy`` section and what it found."""

    greedy: dict[str, GreedyScore]
    fine_tune_visible_on: str
    erased: list[str]  # warnings: a quantized file answers like the untuned base
    reference: list[str]  # warning: the reference file differs from the merged model


def _score(outs: list[list[int]], merged: list[list[int]], base: list[list[int]], tok) -> GreedyScore:
    vs_m = [agree(a, b) for a, b in zip(outs, merged)]
    vs_b = [agree(a, b) for a, b in zip(outs, base)]
    return GreedyScore(identical_to_merged=sum(a == b for a, b in zip(outs, merged)), prompts=len(outs),
                       agreement_with_merged=round(sum(vs_m) / len(vs_m), 3),
                       agreement_with_base=round(sum(vs_b) / len(vs_b), 3),
                       text=tok.decode(outs[0], skip_special_tokens=False))


def _erased(name: str, outs: list[list[int]], merged: list[list[int]], base: list[list[int]],
            differs: list[int]) -> tuple[int, list[str]]:
    """The prompts where ``name`` answers more like the base than the merged model, and the warning."""
    like_base = sum(agree(outs[i], base[i]) > agree(outs[i], merged[i]) for i in differs)
    if like_base * 2 <= len(differs):
        return like_base, []
    return like_base, [f"{name} answers more like the untuned base than the merged model on {like_base}/{len(differs)} prompts: "
            "quantization erased the fine-tune; ship "
            + ("F16" if name.upper() == "Q8_0" else "Q8_0 (or F16)")
            + " or the adapter GGUF on a base GGUF instead"]


def section(answers: dict[str, list[Greedy]], merged_full: list[Greedy], base: list[Greedy], *, ref_name: str,
            quantized: list[str], max_new_tokens: int, tok) -> Parity:
    """Score each model of ``answers`` (cut to ``max_new_tokens``) against the merged model and the
    base; ``quantized`` are the names also checked for an erased fine-tune."""
    merged = [o[:max_new_tokens] for o in merged_full]
    differs = [i for i, (a, b) in enumerate(zip(merged, base)) if a != b]
    greedy, erased = {}, []
    for name, full in answers.items():
        outs = [o[:max_new_tokens] for o in full]
        greedy[name] = _score(outs, merged, base, tok)
        if name in quantized and differs:
            like_base, warning = _erased(name, outs, merged, base, differs)
            greedy[name] = dataclasses.replace(greedy[name], closer_to_base_on=like_base)
            erased += warning
    ref = greedy[ref_name]
    reference = []
    if ref.identical_to_merged < ref.prompts:
        reference.append(f"{ref_name}: greedy text differs from the merged transformers model on "
                         f"{ref.prompts - ref.identical_to_merged}/{ref.prompts} prompts")
    return Parity(greedy, f"{len(differs)}/{len(merged)} prompts (merged greedy text differs from the base's)",
                  erased, reference)
