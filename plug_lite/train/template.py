"""Step 4, the chat template and the end-of-turn token.

The template is the base model's own; for a base model without one, ``templates.CHATML`` (or
``--chat-template gemma``). The end-of-turn token the template writes after an assistant turn
(``<|im_end|>``, ``<end_of_turn>``) becomes the EOS the model learns to stop on; the tokenizer gets
a padding token other than it. The template saved with the run is the inference one (no
``{% generation %}`` markers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import templates
from ..io import UserError

__all__ = ["ChatFormat", "setup_chat_format", "setup_chat_template", "end_of_turn_token", "set_pad_token",
           "strip_generation_markers"]

_PROBE = "PLUGLITEPROBE"


@dataclass(frozen=True)
class ChatFormat:
    """The run's chat template and the end-of-turn token it trains."""

    template_name: str | None  # its name in plug_lite.templates, None for the model's own
    eos: str
    eos_id: int


def setup_chat_format(tokenizer, fallback: str) -> ChatFormat:
    """Give ``tokenizer`` its inference chat template (``fallback`` when it has none) and find the
    end-of-turn token, which must be in the vocabulary."""
    template_name = setup_chat_template(tokenizer, fallback)
    eos = end_of_turn_token(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids(eos)
    if eos_id is None or eos_id == getattr(tokenizer, "unk_token_id", object()):
        raise UserError(f"the chat template's end-of-turn token {eos!r} is not in the vocabulary")
    return ChatFormat(template_name, eos, eos_id)


def set_pad_token(tokenizer, eos_id: int) -> None:
    """A padding token other than the end-of-turn token, when the tokenizer has none or pads with it."""
    if tokenizer.pad_token is None or tokenizer.pad_token_id == eos_id:
        # Padding with the EOS is harmless here (labels come from the dataset) but a distinct pad is safer.
        for cand in ("<|endoftext|>", "<pad>", "<unk>"):
            cid = tokenizer.convert_tokens_to_ids(cand)
            if cand in tokenizer.get_vocab() and cid != eos_id:
                tokenizer.pad_token = cand
                break


def strip_generation_markers(template: str) -> str:
    """A template without ``{% generation %}`` / ``{% endgeneration %}`` (training-only markers)."""
    return re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", template)


def setup_chat_template(tokenizer, fallback: str) -> str | None:
    """Give the tokenizer an inference chat template; returns its registry name (or None)."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = templates.get(fallback)
        print(f"chat template: the model has none; using plug_lite.templates.{fallback.upper()}")
    if "generation" in tokenizer.chat_template and re.search(r"\{%-?\s*generation", tokenizer.chat_template):
        tokenizer.chat_template = strip_generation_markers(tokenizer.chat_template)
    return templates.name_of(tokenizer.chat_template)


def end_of_turn_token(tokenizer) -> str:
    """The token the chat template writes right after an assistant message (the EOS to train)."""
    name = templates.name_of(tokenizer.chat_template)
    if name:
        return templates.STOP[name]
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    after = text[text.rfind(_PROBE) + len(_PROBE):] if _PROBE in text else ""
    specials = set(tokenizer.all_special_tokens) | set(getattr(tokenizer, "added_tokens_encoder", {}) or {})
    if tokenizer.eos_token and tokenizer.eos_token in after:
        first = min(((after.find(s), s) for s in specials if s and s in after), default=(None, None))[1]
        return first or tokenizer.eos_token
    hits = sorted((after.find(s), -len(s), s) for s in specials if s and s in after)
    if hits:
        return hits[0][2]
    return tokenizer.eos_token  # the mask check then fails with a clear message

