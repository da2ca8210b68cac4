"""Check 4 of step 3, the stops: does each model end its turn by itself?

llama.cpp must treat the template's end of turn as end of generation in the reference file
(:func:`check_stops_at_eos`, an error otherwise). Then the greedy answers of check 3 run on until
the end-of-turn token or the stop budget (``--stop-budget``, at least the tokens compared);
:func:`section` counts, for the merged model and every GGUF, how many ended their turn, and warns
loudly about a model that does not stop: its answers would run to the token limit.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Greedy
from ..io import UserError
from ..runs import StopCount
from .prompts import Reference

__all__ = ["check_stops_at_eos", "summary", "section"]


def check_stops_at_eos(eng, path: Path, ref: Reference) -> str:
    """llama.cpp stops generating at the end of turn in ``path`` (open in ``eng``)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(eng.llm._model.model)
    if not llama_cpp.llama_vocab_is_eog(vocab, ref.eot_id):
        raise UserError(f"{path.name}: llama.cpp does not stop generation at {ref.eot_text!r}")
    return "ok"


def summary(outs: list[Greedy], budget: int) -> StopCount:
    """How many of one model's answers ended their turn, and their lengths."""
    return StopCount(stopped=sum(o.stopped for o in outs), prompts=len(outs), budget=budget,
                     tokens=[len(o) for o in outs])


def section(answers: dict[str, list[Greedy]], budget: int) -> tuple[dict[str, StopCount], list[str]]:
    """The report's ``stops`` (model -> :func:`summary`) and a warning per model that did not stop."""
    stops = {name: summary(outs, budget) for name, outs in answers.items()}
    warnings = [
        f"{name} did not end its turn within {budget} tokens on {st.prompts - st.stopped}/{st.prompts} "
        f"held-out prompts: its answers will run to the token limit (train longer or with more rows; "
        f"see 'turn_tokens' in plug_run.json)"
        for name, st in stops.items() if st.stopped < st.prompts]
    return stops, warnings
