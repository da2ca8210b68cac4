"""Prompted PLUG: the PLUG answer format asked of an instruct model that was never trained on it.

The baseline that tells the format's effect from the fine-tune's (cross-lingual prompting such as
XLT, Huang et al. 2023, gets much of a pivot's gain from prompting alone). Any chat model gets

1. a system prompt in this project's words (:data:`INSTRUCTION`) asking for the three PLUG parts
   with the target language's exact headers (the ones :func:`plug_lite.formats.render_plug`
   writes and the parser reads), and
2. ``k`` worked examples as earlier turns of the conversation: the user asks in the target
   language, the assistant answers in the full PLUG format, rendered by
   :func:`plug_lite.formats.render` exactly as a training row's completion.

Its output is then parsed exactly as a trained PLUG model's (same statuses: ``ok``,
``truncated``, ``monolingual``, ``not_found``) and recorded with format :data:`PROMPTED`
(``plug_prompted``), so judge, report and metrics take it like any other answers file.

The examples come from the shipped sample's training pairs (``plug_lite/resources/sample``,
``train.<target>.jsonl`` with ``train.<pivot>.jsonl``) or a user file (JSON/JSONL with
``instruction``, ``response``, ``pivot_instruction``, ``pivot_response``: the parallel records of
``plug-lite data build --input``). Never from the evaluation set: an example whose instruction is
also an instruction being answered is left out (:meth:`PromptedPlug.excluding`). Which ``k``:
the ones whose rendered completion is nearest the pool's median length (file order breaks ties;
they are shown in file order): typical answers, neither one-line slogans nor long essays.

Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import formats
from .io import UserError, read_records
from .spec import PlugSpec

__all__ = ["PROMPTED", "INSTRUCTION", "PromptedPlug", "load_examples"]

#: The format recorded for prompted-PLUG answers.
PROMPTED = "plug_prompted"

INSTRUCTION = (
    "You answer in {target}, but you work the answer out in {pivot} first. For every message, write "
    "three parts in this order, each one starting on a new line with its header exactly as shown:\n"
    "1. \"{pivot_instruction_header}\" and then the user's message restated in {pivot};\n"
    "2. \"{pivot_response_header}\" and then your full answer to it, in {pivot};\n"
    "3. \"{target_response_header}\" and then the answer the user will read, entirely in {target}: "
    "the content of part 2 told in natural {target}, not translated word by word.\n"
    "Write nothing before the first header and nothing after the third part. The earlier turns of "
    "this conversation are worked examples of the layout."
)


def _key(text: str) -> str:
    return " ".join(str(text or "").split())


def load_examples(target: str, pivot: str = "en", path: str | None = None) -> list[dict]:
    """Parallel example records (``instruction``, ``response``, ``pivot_instruction``,
    ``pivot_response``): the shipped sample's, or ``path``'s."""
    if path is None:
        from .data import load_sample

        return load_sample(target, pivot)
    need = ("instruction", "response", "pivot_instruction", "pivot_response")
    recs = read_records(path, required=need, nonempty=need)
    if not recs:
        raise UserError(f"{path}: no examples")
    return recs


@dataclass(frozen=True)
class PromptedPlug:
    """The PLUG instruction and worked examples for one target / pivot pair."""

    spec: PlugSpec
    examples: tuple[dict, ...]  # the chosen parallel records
    source: str  # "sample" or the examples file

    @classmethod
    def build(cls, target: str, pivot: str = "en", *, shots: int = 2, examples: str | None = None,
              exclude: list[str] = ()) -> "PromptedPlug":
        """The prompt with ``shots`` examples (0: the instruction alone) from the sample or the
        file ``examples``, none of whose instructions is one of ``exclude`` (the instructions
        being answered)."""
        spec = PlugSpec("plug", target, pivot)
        if shots < 0:
            raise UserError(f"--shots must be 0 or more (got {shots})")
        pool = load_examples(spec.target, spec.pivot, examples) if shots else []
        return cls(spec, (), examples or "sample").excluding(exclude, pool=pool, shots=shots)

    def excluding(self, instructions: list[str], *, pool: list[dict], shots: int) -> "PromptedPlug":
        """This prompt with ``shots`` examples chosen from ``pool``, leaving out any whose
        instruction (target or pivot side, whitespace-normalised) is in ``instructions``."""
        banned = {_key(t) for t in instructions}
        usable = [r for r in pool if _key(r["instruction"]) not in banned and _key(r["pivot_instruction"]) not in banned]
        if len(usable) < shots:
            raise UserError(f"{self.source if self.source != 'sample' else 'the shipped sample'}: only {len(usable)} "
                            f"worked examples that are not in the evaluation set; --shots {shots} needs more")
        lengths = [len(self._completion(r)) for r in usable]
        mid = sorted(lengths)[len(lengths) // 2] if lengths else 0
        ranked = sorted(range(len(usable)), key=lambda i: (abs(lengths[i] - mid), i))[:shots]
        return replace(self, examples=tuple(usable[i] for i in sorted(ranked)))

    def _completion(self, r: dict) -> str:
        return formats.render("plug", target=self.spec.target, pivot=self.spec.pivot,
                              pivot_instruction=r["pivot_instruction"], pivot_response=r["pivot_response"],
                              target_response=r["response"])

    def system_prompt(self) -> str:
        t, p = self.spec.target_language, self.spec.pivot_language
        return INSTRUCTION.format(target=t.name, pivot=p.name, pivot_instruction_header=p.instruction_header,
                                  pivot_response_header=p.response_header, target_response_header=t.response_header)

    def shots(self) -> list[dict]:
        """The worked examples as earlier turns (user, assistant, ...)."""
        out = []
        for r in self.examples:
            out += [{"role": "user", "content": r["instruction"]},
                    {"role": "assistant", "content": self._completion(r)}]
        return out

    def messages(self, instruction: str, system: str | None = None) -> list[dict]:
        """The messages that ask for one answer: the instruction as system prompt (or
        ``system``), the worked examples, then ``instruction``."""
        sys_text = self.system_prompt() if system is None else system
        return ([{"role": "system", "content": sys_text}] if sys_text else []) + self.shots() + [
            {"role": "user", "content": str(instruction)}]

    def public(self) -> dict:
        """What an answers file's ``decoding`` records of the prompt."""
        return {"shots": len(self.examples), "examples": self.source,
                "example_ids": [str(r.get("id")) for r in self.examples]}
