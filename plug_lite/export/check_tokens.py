"""Check 2 of step 3: a rendered PLUG prompt is the same text and the same token ids in transformers
and in llama.cpp.

For each held-out prompt, llama.cpp's Jinja formatter renders the chat with the template stored
in the reference GGUF, and its tokenizer (special tokens parsed, no BOS added: the ids already
hold it when the model uses one) tokenizes the text transformers rendered. Both must equal what
transformers made, or :class:`~plug_lite.io.UserError` names the file and the prompt. Then the
same with the user message alone, as llama.cpp's server, LM Studio and most SDK users send it:
the GGUF's template must insert the PLUG system prompt itself and give the trained tokens
(:func:`plug_lite.templates.with_default_system`); the engine's tokens (plug-lite chat, serve)
are compared too.
"""

from __future__ import annotations

from pathlib import Path

from ..io import UserError
from .prompts import HeldOut, messages

__all__ = ["check_prompt_tokens", "check_default_system"]


def check_prompt_tokens(eng, path: Path, held: HeldOut) -> str:
    """Check the held-out prompts on ``path`` (open in ``eng``); returns the report's entry."""
    for p, t, ids in zip(held.prompts, held.texts, held.ids):
        rendered, _ = eng.format(messages(held.run, p))  # llama.cpp's Jinja formatter on the GGUF's template
        if rendered != t:
            raise UserError(f"{path.name}: llama.cpp renders the chat template differently from transformers (prompt {p!r})")
        if eng.llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) != ids:
            raise UserError(f"{path.name}: llama.cpp tokenizes the rendered PLUG prompt differently from transformers")
    return "ok"


def check_default_system(eng, path: Path, held: HeldOut) -> str:
    """With no system message, the GGUF's template renders the trained PLUG prompt, token for token."""
    for p, t, ids in zip(held.prompts, held.texts, held.ids):
        user = [{"role": "user", "content": p}]
        if eng.format(user)[0] != t or eng.tokenize(user)[0] != ids:
            raise UserError(f"{path.name}: with no system message the chat template does not render the PLUG "
                            f"system prompt the model was trained with (prompt {p!r})")
    return "ok"
