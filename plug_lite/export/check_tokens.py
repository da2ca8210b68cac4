"""Check 2 of step 3: a rendered PLUG prompt is the same text and the same token ids in transformers
and in llama.cpp.

For each held-out prompt, llama.cpp's Jinja formatter renders the chat with the template stored
in the reference GGUF, and its tokenizer (special tokens parsed, no BOS added: the ids already
hold it when the model uses one) tokenizes the text transformers rendered. Both must equal what
transformers made, or :class:`~plug_lite.io.UserError` names the file and the prompt.
"""

from __future__ import annotations

from pathlib import Path

from ..io import UserError
from .prompts import HeldOut, messages

__all__ = ["check_prompt_tokens"]


def check_prompt_tokens(eng, path: Path, held: HeldOut) -> str:
    """Check the held-out prompts on ``path`` (open in ``eng``); returns the report's entry."""
    for p, t, ids in zip(held.prompts, held.texts, held.ids):
        rendered, _ = eng.format(messages(held.run, p))  # llama.cpp's Jinja formatter on the GGUF's template
        if rendered != t:
            raise UserError(f"{path.name}: llama.cpp renders the chat template differently from transformers (prompt {p!r})")
        if eng.llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) != ids:
            raise UserError(f"{path.name}: llama.cpp tokenizes the rendered PLUG prompt differently from transformers")
    return "ok"
