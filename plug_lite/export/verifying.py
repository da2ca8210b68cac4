"""Step 3, verify: the four checks on the staged files, in order; their report is the ``verify``
section of ``export_report.json``.

1. :mod:`.check_metadata`: template, EOS/BOS and PLUG keys of every file (and llama.cpp's EOS id);
2. :mod:`.check_tokens`: a rendered PLUG prompt, token for token, in transformers and llama.cpp;
3. :mod:`.check_greedy`: greedy text of the merged model against the reference file, of every
   quantized file against the merged model and the base, and of the adapter GGUF on the base GGUF;
4. :mod:`.check_stops`: whether each of them ends its turn on the held-out prompts;
5. :mod:`.check_drift`: how far each quantized file drifts from the reference file on held-out
   PLUG rows, by language (KL divergence, top-1 agreement, perplexity ratio).

Checks 1 and 2 (and llama.cpp's end-of-generation flag) raise :class:`~plug_lite.io.UserError`;
checks 3 and 4 measure and warn; check 5 warns, or fails with ``--strict-drift``. The answers are made once, up to the stop budget, and read by both.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..drift import DEFAULT_ROWS
from ..engine import LlamaEngine
from ..runs import ParityReport, RunRecord, resolve_base
from . import check_drift, check_greedy, check_metadata, check_stops, check_tokens
from .prompts import HeldOut, Reference

__all__ = ["verify"]

_QLORA_ADAPTER_NOTE = ("QLoRA run: the adapter GGUF adds the LoRA to the unrounded base, the merged model "
                       "to the NF4-rounded one; small differences between them are expected")


def _checks_on_reference(path: Path, ref: Reference, held: HeldOut, budget: int, checks: dict) -> list:
    """Checks that need llama.cpp on the reference file, with it loaded once; returns its greedy
    answers (up to ``budget`` tokens) for check 3."""
    with contextlib.closing(LlamaEngine(path, ctx=1024)) as eng:
        check_metadata.check_llama_eos(eng, path, ref)
        checks["prompt_tokens"] = check_tokens.check_prompt_tokens(eng, path, held)
        checks["default_system"] = check_tokens.check_default_system(eng, path, held)
        checks["stops_at_eos"] = check_stops.check_stops_at_eos(eng, path, ref)
        return [eng.greedy(ids, budget, {ref.eot_id}) for ids in held.ids]


def verify(run: RunRecord, merged_dir: Path, files: dict[str, Path], *, adapter_gguf: Path | None = None,
           base_gguf: Path | None = None, n_prompts: int = 3, max_new_tokens: int = 32,
           stop_budget: int = 256, drift_rows: int = DEFAULT_ROWS,
           max_drift: float = check_drift.DEFAULT_MAX_DRIFT, strict_drift: bool = False) -> ParityReport:
    """Parity of the exported files with the merged transformers model, and whether each ends its
    turn (see the module doc). Greedy answers to ``n_prompts`` held-out instructions run until the
    end-of-turn token or ``stop_budget`` tokens; parity compares their first ``max_new_tokens``.
    Raises :class:`UserError` on a template, EOS or metadata mismatch, and with ``strict_drift``
    when a quantized file drifts more than ``max_drift`` on ``drift_rows`` held-out rows."""
    budget = max(stop_budget, max_new_tokens)
    ref = Reference.load(run, merged_dir)
    checks = check_metadata.check_files(run, files, ref)
    held = HeldOut.render(run, ref.tok, n_prompts)
    ref_name = next(iter(files))
    answers = {ref_name: _checks_on_reference(files[ref_name], ref, held, budget, checks)}
    merged, base = check_greedy.merged_and_base_answers(merged_dir, resolve_base(run), held, ref, budget, max_new_tokens)
    quantized = [name for name in files if name != ref_name]
    for name in quantized:
        answers[name] = check_greedy.gguf_answers(files[name], held.ids, budget, {ref.eot_id})
    if adapter_gguf and base_gguf:
        answers["adapter_on_base"] = check_greedy.gguf_answers(base_gguf, held.ids, budget, {ref.eot_id}, lora=adapter_gguf)

    parity = check_greedy.section(answers, merged, base, ref_name=ref_name, quantized=quantized,
                                  max_new_tokens=max_new_tokens, tok=ref.tok)
    stops, stop_warnings = check_stops.section({"merged": merged, **answers}, budget)
    drifted = check_drift.check_drift(run, files, rows=drift_rows, max_drift=max_drift, strict=strict_drift)
    return ParityReport(
        checks=checks, greedy=parity.greedy, stops=stops,
        warnings=[*parity.erased, *stop_warnings, *parity.reference, *(drifted.warnings if drifted else [])],
        fine_tune_visible_on=parity.fine_tune_visible_on,
        adapter_note=_QLORA_ADAPTER_NOTE if "adapter_on_base" in answers and run.load_in_4bit else None,
        merged_text=ref.tok.decode(merged[0], skip_special_tokens=False),
        drift=drifted,
    )
