"""Check 1 of step 3: what every GGUF file says about itself, read back from the file.

Per file: the PLUG keys of the run's spec, ``tokenizer.chat_template`` equal to the run's inference
template, the EOS id equal to the template's end of turn, and the BOS llama.cpp adds equal to the
tokenizer's (or none added when the model has no BOS). Then llama.cpp's own view of the reference
file: the EOS id it loaded. A mismatch raises :class:`~plug_lite.io.UserError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

from .. import gguf_meta
from ..io import UserError
from ..runs import RunRecord
from .prompts import Reference

__all__ = ["check_files", "check_llama_eos"]


def _check_file(path: Path, want: dict, ref: Reference) -> None:
    tok, eot_text, eot_id = ref.tok, ref.eot_text, ref.eot_id
    md = gguf_meta.read_metadata(path)
    for k, v in want.items():
        if md.get(k) != v:
            raise UserError(f"{path.name}: metadata {k} is {md.get(k)!r}, expected {v!r}")
    if md.get("tokenizer.chat_template") != tok.chat_template:
        raise UserError(f"{path.name}: tokenizer.chat_template differs from the run's inference template")
    if md.get("tokenizer.ggml.eos_token_id") != eot_id:
        raise UserError(f"{path.name}: EOS id {md.get('tokenizer.ggml.eos_token_id')} is not the template's end of turn {eot_text!r} ({eot_id})")
    if tok.bos_token_id is not None and md.get("tokenizer.ggml.add_bos_token") and md.get("tokenizer.ggml.bos_token_id") != tok.bos_token_id:
        raise UserError(f"{path.name}: BOS id {md.get('tokenizer.ggml.bos_token_id')} differs from the tokenizer's ({tok.bos_token_id})")
    if tok.bos_token_id is None and md.get("tokenizer.ggml.add_bos_token"):
        raise UserError(f"{path.name}: llama.cpp would add a BOS token the model was not trained with")


def check_files(run: RunRecord, files: dict[str, Path], ref: Reference) -> dict:
    """Check every file; returns the report's ``checks`` entries."""
    want = run.spec.gguf_fields()
    for path in files.values():
        _check_file(path, want, ref)
    return dict(template="ok", eos="ok", bos="ok", plug_metadata="ok", eos_id=ref.eot_id, eos_token=ref.eot_text)


def check_llama_eos(eng, path: Path, ref: Reference) -> None:
    """The EOS id llama.cpp loaded from ``path`` (open in ``eng``) is the template's end of turn."""
    eos = eng.llm._model.token_eos()
    if eos != ref.eot_id:
        raise UserError(f"{path.name}: llama.cpp's EOS id {eos} is not the template's end of turn {ref.eot_text!r} ({ref.eot_id})")
