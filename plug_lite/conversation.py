"""The conversation policy of a PLUG model, shared by ``plug-lite chat`` and ``plug-lite serve``.
Standard library only.

What a model is shown of a conversation:

* **System prompt.** The prompt the model was trained with (:meth:`plug_lite.spec.PlugSpec.system_prompt`)
  unless the user overrides it (``chat --system``, ``serve --system``); a plain model (no
  ``plug.*`` keys) has none of its own.
* **A client's own system message** (``serve``: OpenAI clients send one as a ``system`` or
  ``developer`` message; several are joined) is handled by one of :data:`CLIENT_SYSTEM_RULES`:

  - ``append`` (the default): the model's prompt first, then a blank line, then the client's
    text. The model keeps the instruction it was trained to follow (the PLUG answer format) and
    still sees the client's wishes. Measured on the ``make demo`` model (benchmarks/RESULTS.md,
    "GGUFs that carry their PLUG prompt"): 19/20 PLUG answers that end with a client's "You are a
    helpful assistant." appended, 0/20 when it replaces the prompt, 20/20 with none.
  - ``ignore``: the client's text is dropped; the model sees exactly its training prompt.
  - ``replace``: the client's text replaces the model's prompt (as ``chat --system`` does); a
    PLUG model then usually stops writing its pivot and its target header.

  A model without a prompt of its own gets the client's text under every rule.
* **History.** Only the *target-language answer* of an earlier assistant turn goes back to the
  model, never the pivot scaffolding (:func:`kept_answer`). Reasons: it is what the user saw
  and answers to; the pivot doubles or triples the tokens per turn, so keeping it would fill the
  context two to three times faster; and a PLUG model is trained on single turns, so neither
  choice is in its training distribution, while a short target answer is closest to an ordinary
  conversation. The cost: the model does not see its own earlier pivot reasoning. An assistant
  message that a client sends back whole (``serve --pivot content``, or a client that returns
  ``reasoning_content``) is reduced the same way, so every client gets the same policy.
"""

from __future__ import annotations

from . import formats
from .spec import PlugSpec

__all__ = ["CLIENT_SYSTEM_RULES", "system_prompt", "client_system", "kept_answer", "messages", "from_client"]

#: How a client's own system message meets the model's system prompt (see the module docstring).
CLIENT_SYSTEM_RULES = ("append", "ignore", "replace")


def system_prompt(spec: PlugSpec | None, override: str | None = None) -> str | None:
    """The system prompt the model is run with: ``override`` when given (an empty string means
    none), else the one its spec was trained with; None for a plain model."""
    if override is not None:
        return override or None
    return spec.system_prompt() if spec else None


def client_system(own: str | None, client: str | None, rule: str = "append") -> str | None:
    """The system prompt when a client sends ``client`` and the model's own is ``own``."""
    if rule not in CLIENT_SYSTEM_RULES:
        raise ValueError(f"unknown client system rule {rule!r}; expected one of {', '.join(CLIENT_SYSTEM_RULES)}")
    client = (client or "").strip() or None
    if own is None or client is None:
        return own or client
    if rule == "ignore":
        return own
    if rule == "replace":
        return client
    return f"{own}\n\n{client}"


def kept_answer(text: str, spec: PlugSpec | None, parse: formats.PlugParse | None = None) -> str:
    """What goes back into the history for an assistant turn whose text is ``text``: its
    target-language answer (:attr:`plug_lite.formats.PlugParse.answer`, which falls back to what
    the model wrote when no target section is found); the stripped text for a plain model. A text
    that is the target answer already comes back unchanged (stripped)."""
    if spec is None:
        return text.strip()
    if parse is None:
        parse = formats.parse(text, **spec.parser_args())
    return parse.answer


def messages(system: str | None, history: list[dict], question: str) -> list[dict]:
    """The chat messages for one more question."""
    head = [{"role": "system", "content": system}] if system else []
    return head + list(history) + [{"role": "user", "content": question}]


def from_client(msgs: list[dict], spec: PlugSpec | None, *, override: str | None = None,
                rule: str = "append") -> list[dict]:
    """The messages a model is shown for a client's conversation ``msgs`` (dicts with ``role``
    ``system``/``developer``/``user``/``assistant`` and a string ``content``): one system
    prompt first (the model's, the client's system messages joined and combined by ``rule``),
    then the user and assistant turns in order, each assistant turn reduced to
    :func:`kept_answer`. Other keys of a message (``reasoning_content``, ``name``) are dropped."""
    own = system_prompt(spec, override)
    client = "\n\n".join(m["content"].strip() for m in msgs
                         if m["role"] in ("system", "developer") and m["content"].strip())
    system = client_system(own, client, rule)
    out = [{"role": "system", "content": system}] if system else []
    for m in msgs:
        if m["role"] == "user":
            out.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant":
            out.append({"role": "assistant", "content": kept_answer(m["content"], spec)})
    return out
