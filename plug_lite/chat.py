"""``plug-lite chat``: talk to a GGUF with llama.cpp, the pivot hidden while it streams.

The shape follows litgpt's chat loop: a generator (:meth:`ChatSession.ask`) yields pieces of
text tagged with their section (:class:`plug_lite.formats.StreamEvent`); the REPL only prints.
:class:`plug_lite.formats.StreamParser` decides which section a piece belongs to, so this module
never looks at headers itself.

What the model is told comes from the GGUF: ``plug.format``, ``plug.target``, ``plug.pivot`` and
``plug.think`` (written by ``plug-lite export``); ``--format/--target/--pivot`` override them. A
GGUF without them is a plain chat model (a note says so). When the GGUF has no
``tokenizer.chat_template``, the template kept in :mod:`plug_lite.templates` for its
``general.architecture`` is rendered with llama-cpp-python's ``Jinja2ChatFormatter`` (its own
guess for Gemma is wrong, see /work/shared/NOTES.md).

History: after each turn only the *target-language answer* goes back into the conversation as
the assistant message, not the pivot scaffolding. Reasons: it is what the user saw and answers
to; the pivot doubles or triples the tokens per turn, so keeping it would fill the context two
to three times faster; and a PLUG model is trained on single turns, so neither choice is in its
training distribution, while a short target answer is closest to an ordinary conversation. The
cost: the model does not see its own earlier English reasoning. An interrupted answer (Ctrl-C)
and a failed turn leave the history unchanged.

Stats after each answer (stderr): decode tokens/s, time from the question to the first
target-language character, and the tokens spent before the target section began (the pivot).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from . import formats, languages, templates
from .engine import default_threads
from .formats import StreamEvent
from .io import UserError, run_cli

__all__ = ["check_gguf", "read_gguf_header", "LlamaEngine", "TurnStats", "ChatSession", "one_shot", "main", "cli"]

GGUF_MAGIC = b"GGUF"
DEFAULT_CTX = 4096
PLUG_KEYS = ("plug.format", "plug.target", "plug.pivot", "plug.think")


class ContextOverflow(UserError):
    """The conversation no longer fits the context window."""


#: ggml type id -> (elements per block, bytes per block), for the size check of common types.
_GGML_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
               9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
               14: (256, 210), 15: (256, 292), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8),
               28: (1, 8), 30: (1, 2)}


def read_gguf_header(path: str | os.PathLike) -> tuple[dict, int]:
    """The scalar and string metadata of a GGUF (arrays skipped) and the smallest file size its
    header allows (data start + the furthest tensor offset). Standard library only."""
    import struct

    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        data = f.read  # sequential reads; arrays of strings (the vocabulary) are skipped quickly

        def unpack(fmt: str):
            size = struct.calcsize("<" + fmt)
            raw = data(size)
            if len(raw) < size:
                raise EOFError
            return struct.unpack("<" + fmt, raw)[0]

        def string() -> str:
            n = unpack("Q")
            raw = data(n)
            if len(raw) < n:
                raise EOFError
            return raw.decode("utf-8", errors="replace")

        def value(t: int):
            if t in scalar:
                return unpack(scalar[t])
            if t == 8:
                return string()
            if t == 9:
                sub, n = unpack("I"), unpack("Q")
                if sub in scalar:
                    f.seek(n * struct.calcsize("<" + scalar[sub]), 1)
                else:
                    for _ in range(n):
                        value(sub)
                return None
            raise ValueError(f"unknown GGUF value type {t}")

        magic = data(4)
        version, n_tensors, n_kv = unpack("I"), unpack("Q"), unpack("Q")
        meta: dict = {"GGUF.version": version}
        for _ in range(n_kv):
            key = string()
            v = value(unpack("I"))
            if v is not None:
                meta[key] = v
        furthest = 0
        for _ in range(n_tensors):
            string()
            n_dims = unpack("I")
            count = 1
            for _ in range(n_dims):
                count *= unpack("Q")
            block, size = _GGML_SIZES.get(unpack("I"), (1, 0))  # unknown type: offset only
            furthest = max(furthest, unpack("Q") + count // block * size)
        align = int(meta.get("general.alignment", 32))
        start = -(-f.tell() // align) * align
    del magic
    return meta, start + furthest


def check_gguf(path: str | os.PathLike) -> Path:
    """A one-line :class:`UserError` when ``path`` is missing, a folder, not a GGUF file or
    shorter than its header says."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: file not found")
    if p.is_dir():
        raise UserError(f"{p}: is a folder, expected a .gguf file")
    with open(p, "rb") as f:
        head = f.read(4)
    if head != GGUF_MAGIC:
        raise UserError(f"{p}: not a GGUF file (it starts with {head!r}, expected b'GGUF')")
    size = p.stat().st_size
    try:
        _, need = read_gguf_header(p)
    except (EOFError, ValueError, OverflowError, MemoryError):
        raise UserError(f"{p}: truncated or corrupt GGUF (its header cannot be read; {size} bytes)") from None
    if size < need:
        raise UserError(f"{p}: truncated GGUF: {size} bytes, its header promises {need}")
    return p


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------
# The engine: one loaded GGUF, chat formatting and a token-by-token text stream.


@dataclass
class TurnStats:
    """Counts and timings of one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    pivot_tokens: int = 0  # tokens generated before the target section began
    target_tokens: int = 0
    seconds: float = 0.0  # whole turn, prompt processing included
    first_token_s: float | None = None  # question -> first generated token
    first_target_s: float | None = None  # question -> first target-language character shown
    decode_tokens_per_s: float | None = None  # after the first token
    finish_reason: str = "stop"  # "stop", "length" or "interrupted"


class LlamaEngine:
    """A GGUF loaded with llama-cpp-python, and what its metadata says about PLUG."""

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        ctx: int | None = None,
        gpu_layers: int | None = None,
        threads: int | None = None,
        lora: str | os.PathLike | None = None,
        seed: int = 0,
    ) -> None:
        import llama_cpp

        self.path = check_gguf(model_path)
        if lora is not None:
            lora = check_gguf(lora)
        header, _ = read_gguf_header(self.path)
        self.architecture = header.get("general.architecture")
        train_ctx = header.get(f"{self.architecture}.context_length")
        self.context_length = int(train_ctx) if train_ctx else None
        # The default is capped by what the model was trained for; an explicit --ctx is kept.
        n_ctx = ctx or min(DEFAULT_CTX, self.context_length or DEFAULT_CTX)
        if gpu_layers is None:
            gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.gpu_layers = gpu_layers
        # every usable core unless --threads says otherwise (llama-cpp-python's own default is half)
        n_threads, n_threads_batch = (threads, threads) if threads else default_threads()
        self.threads = (n_threads, n_threads_batch)
        kwargs = dict(n_gpu_layers=gpu_layers, seed=seed, verbose=False, n_ctx=n_ctx,
                      n_threads=n_threads, n_threads_batch=n_threads_batch)
        if lora is not None:
            kwargs["lora_path"] = str(lora)
        try:
            self.llm = llama_cpp.Llama(model_path=str(self.path), **kwargs)
        except (ValueError, RuntimeError, OSError) as e:
            what = "the adapter or the model" if lora is not None else "the file"
            raise UserError(
                f"{self.path}: llama.cpp could not load {what} (truncated or corrupt GGUF? {e})"
            ) from None
        meta = dict(self.llm.metadata or {})
        self.metadata = meta
        self.n_ctx = self.llm.n_ctx()
        self.plug = {k.split(".", 1)[1]: meta[k] for k in PLUG_KEYS if meta.get(k)}
        template = meta.get("tokenizer.chat_template")
        self.template_source = "gguf"
        if not template:
            name = templates.for_architecture(self.architecture) or "chatml"
            template = templates.get(name)
            self.template_source = f"plug_lite.templates:{name}"
        vocab = self.llm._model.vocab
        eos_id, bos_id = llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_bos(vocab)
        piece = lambda i: self.llm._model.token_get_text(i) if i is not None and i >= 0 else ""  # noqa: E731
        self._formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=piece(eos_id), bos_token=piece(bos_id)
        )
        self._bos = bos_id
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self._vocab = vocab
        self._is_eog = llama_cpp.llama_vocab_is_eog

    # -- prompts
    def format(self, messages: list[dict]) -> tuple[str, list[str]]:
        """The rendered prompt and its stop strings."""
        out = self._formatter(messages=messages)
        stop = out.stop if isinstance(out.stop, list) else ([out.stop] if out.stop else [])
        return out.prompt, [s for s in stop if s]

    def tokenize(self, messages: list[dict]) -> tuple[list[int], list[str]]:
        prompt, stop = self.format(messages)
        # Templates such as Gemma's write BOS themselves: add it only when the model wants one
        # and the rendered prompt does not start with it (llama.cpp would warn about two).
        toks = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if self._add_bos and self._bos >= 0 and (not toks or toks[0] != self._bos):
            toks = [self._bos, *toks]
        return toks, stop

    # -- generation
    def stream(
        self,
        prompt_tokens: list[int],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] = (),
        seed: int | None = None,
    ) -> Iterator[tuple[str, int]]:
        """Yield (text delta, completion tokens so far). Stops at an end-of-generation token, a
        stop string or ``max_tokens``; sets :attr:`finish_reason`."""
        import codecs

        if seed is not None:
            self.llm.set_seed(seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.finish_reason = "length"
        n = 0
        held = ""  # text that could still become a stop string
        kw = {"temp": temperature} if temperature > 0 else {"temp": 0.0, "top_k": 1}
        for tok in self.llm.generate(prompt_tokens, **kw):
            if self._is_eog(self._vocab, tok):
                self.finish_reason = "stop"
                break
            n += 1
            delta = decoder.decode(self.llm.detokenize([tok]))
            if stop:
                held += delta
                cut = [held.index(s) for s in stop if s in held]
                if cut:
                    if held[: min(cut)]:
                        yield held[: min(cut)], n
                    held = ""
                    self.finish_reason = "stop"
                    break
                keep = max((k for s in stop for k in range(len(s) - 1, 0, -1) if held.endswith(s[:k])), default=0)
                delta, held = held[: len(held) - keep], held[len(held) - keep:]
            if delta:
                yield delta, n
            if n >= max_tokens:
                break
        else:
            self.finish_reason = "length" if n >= max_tokens else "stop"
        tail = held + decoder.decode(b"", final=True)
        if tail:
            yield tail, n
        self.completion_tokens = n

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


# --------------------------------------------------------------------------------------------
# A conversation.


@dataclass
class Turn:
    """The outcome of one :meth:`ChatSession.ask`."""

    question: str
    output: str = ""
    parse: formats.PlugParse | None = None
    stats: TurnStats = field(default_factory=TurnStats)

    def to_dict(self, session: "ChatSession") -> dict:
        p = self.parse
        d = {
            "question": self.question,
            "answer": p.answer if p else self.output.strip(),
            "status": p.status if p else "plain",
            "target": p.target if p else self.output.strip(),
            "pivot_instruction": p.pivot_instruction if p else None,
            "pivot_response": p.pivot_response if p else None,
            "preamble": p.preamble if p else "",
            "extra": p.extra if p else "",
            "output": self.output,
            "format": session.mode,
            "lang": session.target.code if session.target else None,
            "pivot": session.pivot.code if session.pivot and session.mode == "plug" else None,
            "stats": asdict(self.stats),
        }
        return d


class ChatSession:
    """A multi-turn chat with a GGUF. ``ask(text)`` yields :class:`StreamEvent` s (section
    ``pivot_instruction``/``pivot_response``/``target``/``preamble``/``extra``); afterwards
    :attr:`last` holds the :class:`Turn` (parse, stats). Use as a context manager or call
    :meth:`close`.

    ``mode`` is ``plug``, ``mono`` or ``plain`` (a GGUF without PLUG metadata and no flags).
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        engine: LlamaEngine | None = None,
        fmt: str | None = None,
        target: str | None = None,
        pivot: str | None = None,
        think: bool | None = None,
        system: str | None = None,
        ctx: int | None = None,
        gpu_layers: int | None = None,
        threads: int | None = None,
        lora: str | os.PathLike | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.engine = engine or LlamaEngine(model_path, ctx=ctx, gpu_layers=gpu_layers, threads=threads, lora=lora, seed=seed)
        meta = self.engine.plug
        self.note: str | None = None
        fmt = fmt or meta.get("format")
        target = target or meta.get("target")
        if fmt is None and target is None and pivot is None:
            self.mode = "plain"
            self.note = f"{self.engine.path.name} has no PLUG metadata (plug.*): plain chat"
        else:
            self.mode = fmt or "plug"
            if self.mode not in ("plug", "mono"):
                raise UserError(f"--format must be plug or mono for chat (got {self.mode!r})")
            if target is None:
                raise UserError(f"{self.engine.path.name}: no plug.target in the GGUF: pass --target CODE")
        self.target = languages.get(target) if target else None
        self.pivot = languages.get(pivot or meta.get("pivot") or "en")
        if self.mode == "plug" and self.target.code == self.pivot.code:
            raise UserError(f"the pivot language must differ from the target ({self.target.code!r})")
        self.think = think if think is not None else _flag(meta.get("think"))
        self.custom_system = system
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.history: list[dict] = []
        self.last: Turn | None = None

    # -- state
    @property
    def system(self) -> str | None:
        if self.custom_system is not None:
            return self.custom_system or None
        if self.mode == "plain":
            return None
        return languages.system_prompt(self.mode, self.target, self.pivot, think=bool(self.think))

    def reset(self) -> None:
        self.history = []

    def set_system(self, text: str | None) -> None:
        self.custom_system = text

    def set_lang(self, code: str) -> None:
        lang = languages.get(code)
        if self.mode == "plug" and lang.code == self.pivot.code:
            raise UserError(f"the target language must differ from the pivot ({self.pivot.code!r})")
        if self.mode == "plain":
            self.mode = "plug"
        self.target = lang

    def messages(self, text: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + self.history + [{"role": "user", "content": text}]

    # -- one turn
    def ask(self, text: str) -> Iterator[StreamEvent]:
        """Stream the answer to ``text``; history is updated only when the answer completes."""
        t0 = time.perf_counter()
        turn = Turn(question=text)
        self.last = turn
        eng = self.engine
        toks, stop = eng.tokenize(self.messages(text))
        room = eng.n_ctx - len(toks)
        st = turn.stats
        st.prompt_tokens = len(toks)
        if room < 16:
            raise ContextOverflow(
                f"the conversation is {len(toks)} tokens and the context holds {eng.n_ctx}: "
                f"raise --ctx (the model allows {eng.context_length or 'more'}) or /reset"
            )
        parser = None
        if self.mode != "plain":
            parser = formats.StreamParser(target=self.target, pivot=self.pivot, fmt=self.mode, think=self.think)
        n = 0
        t_first_tok = None
        finished = False
        try:
            for delta, n in eng.stream(toks, max_tokens=min(self.max_new_tokens, room), temperature=self.temperature, stop=stop):
                if t_first_tok is None:
                    t_first_tok = time.perf_counter()
                    st.first_token_s = t_first_tok - t0
                turn.output += delta
                events = parser.feed(delta) if parser else [StreamEvent("target", delta)]
                for ev in events:
                    if ev.section == "target" and st.first_target_s is None:
                        st.first_target_s = time.perf_counter() - t0
                        st.pivot_tokens = max(n - 1, 0) if self.mode == "plug" else 0
                    yield ev
            finished = True
        finally:
            end = time.perf_counter()
            st.seconds = end - t0
            st.completion_tokens = getattr(eng, "completion_tokens", n) if finished else n
            st.finish_reason = eng.finish_reason if finished else "interrupted"
            if t_first_tok is not None and st.completion_tokens > 1 and end > t_first_tok:
                st.decode_tokens_per_s = (st.completion_tokens - 1) / (end - t_first_tok)
        if parser:
            for ev in parser.close(finished=st.finish_reason != "length"):
                if ev.section == "target" and st.first_target_s is None:
                    st.first_target_s = time.perf_counter() - t0
                    st.pivot_tokens = st.completion_tokens if self.mode == "plug" else 0
                yield ev
            turn.parse = parser.result
        if st.first_target_s is None and self.mode == "plug":
            st.pivot_tokens = st.completion_tokens
        st.target_tokens = st.completion_tokens - st.pivot_tokens
        answer = turn.parse.answer if turn.parse else turn.output.strip()
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]

    def answer(self, text: str) -> dict:
        """Ask and wait: the turn as a dict (answer, sections, status, stats)."""
        for _ in self.ask(text):
            pass
        return self.last.to_dict(self)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "ChatSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def one_shot(model_path: str | os.PathLike, prompt: str, **kwargs) -> dict:
    """Answer one prompt and return the turn as a dict (see :meth:`Turn.to_dict`)."""
    with ChatSession(model_path, **kwargs) as s:
        out = s.answer(prompt)
        out["note"] = s.note
        return out


# --------------------------------------------------------------------------------------------
# The terminal.

DIM, RESET = "\033[2m", "\033[0m"


def format_stats(st: TurnStats) -> str:
    tps = f"{st.decode_tokens_per_s:.1f} tok/s" if st.decode_tokens_per_s else "- tok/s"
    ft = f"{st.first_target_s:.2f}s" if st.first_target_s is not None else "-"
    extra = "" if st.finish_reason == "stop" else f", stopped: {st.finish_reason}"
    return (f"[{tps}, first answer token after {ft}, pivot {st.pivot_tokens} tokens, "
            f"answer {st.target_tokens} tokens{extra}]")


class _Printer:
    """Prints one turn's events: the pivot hidden behind an indicator, or dimmed."""

    def __init__(self, session: ChatSession, show_pivot: bool, out, err) -> None:
        self.s, self.show_pivot, self.out, self.err = session, show_pivot, out, err
        self.color = out.isatty()
        self.err_tty = err.isatty()
        self.indicator = False
        self.section = None
        self.dimmed = False

    def start(self) -> None:
        if self.s.mode == "plug" and not self.show_pivot:
            self.err.write(f"thinking in {self.s.pivot.name}...")
            if not self.err_tty:
                self.err.write("\n")
            self.err.flush()
            self.indicator = True

    def clear(self) -> None:
        if self.indicator:
            if self.err_tty:
                self.err.write("\r\033[K")
                self.err.flush()
            self.indicator = False

    def event(self, ev: StreamEvent) -> None:
        pivot_sec = ev.section in ("pivot_instruction", "pivot_response")
        if pivot_sec or ev.section in ("preamble", "extra"):
            if not self.show_pivot or ev.section == "extra":
                return
            if ev.section != self.section:
                label = {"pivot_instruction": self.s.pivot.instruction_header,
                         "pivot_response": self.s.pivot.response_header}.get(ev.section, "")
                self._write(("\n\n" if self.section else "") + (label + " " if label else ""), dim=True)
            self.section = ev.section
            self._write(ev.text, dim=True)
            return
        self.clear()
        if ev.section != self.section and self.section is not None:
            self._write("\n\n")
        self.section = ev.section
        self._write(ev.text)

    def _write(self, text: str, dim: bool = False) -> None:
        if self.color and dim != self.dimmed:
            text = (DIM if dim else RESET) + text
            self.dimmed = dim
        self.out.write(text)
        self.out.flush()

    def end(self, turn: Turn | None) -> None:
        self.clear()
        self._write("")  # ends dimming
        if turn is not None and turn.parse is not None and turn.parse.target is None and not self.show_pivot:
            # No target section: show what the model wrote instead, so the turn is not blank.
            self._write(turn.parse.answer)
            self.err.write(f"[no {self.s.target.name} answer found: status {turn.parse.status}]\n")
        self.out.write("\n")
        self.out.flush()


HELP = "commands: /reset  /system TEXT  /lang CODE  /pivot (show/hide the pivot)  /exit  (empty line or Ctrl-D exits)"


def repl(session: ChatSession, *, show_pivot: bool = False, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if session.note:
        print(f"note: {session.note}", file=err)
    lang = f"{session.target.name} via {session.pivot.name}" if session.mode == "plug" else (session.target.name if session.target else "plain")
    print(f"plug-lite chat: {session.engine.path.name} ({session.mode}, {lang}, ctx {session.engine.n_ctx}). {HELP}", file=err)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            out.write("\n")
            return 0
        except KeyboardInterrupt:
            out.write("\n")
            continue
        text = line.strip()
        if not text or text in ("/exit", "/quit"):
            return 0
        if text.startswith("/"):
            cmd, _, arg = text.partition(" ")
            try:
                if cmd == "/reset":
                    session.reset()
                    print("[history cleared]", file=err)
                elif cmd == "/system":
                    session.set_system(arg.strip() or None)
                    print("[system prompt " + ("set]" if arg.strip() else "restored to the default]"), file=err)
                elif cmd == "/lang":
                    session.set_lang(arg.strip())
                    print(f"[answering in {session.target.name}]", file=err)
                elif cmd == "/pivot":
                    show_pivot = not show_pivot
                    print(f"[pivot {'shown' if show_pivot else 'hidden'}]", file=err)
                else:
                    print(f"[unknown command {cmd}] {HELP}", file=err)
            except (UserError, languages.LanguageError) as e:
                print(f"error: {e}", file=err)
            continue
        printer = _Printer(session, show_pivot, out, err)
        gen = session.ask(text)
        try:
            printer.start()
            for ev in gen:
                printer.event(ev)
            printer.end(session.last)
            print(format_stats(session.last.stats), file=err)
        except KeyboardInterrupt:
            gen.close()
            printer.clear()
            printer._write("")
            out.write("\n")
            print("[answer stopped; the session goes on]", file=err)
        except (UserError, languages.LanguageError) as e:
            printer.clear()
            print(f"error: {e}", file=err)


def main(
    *,
    model: str,
    prompt: str | None = None,
    fmt: str | None = None,
    target: str | None = None,
    pivot: str | None = None,
    think: bool | None = None,
    system: str | None = None,
    ctx: int | None = None,
    gpu_layers: int | None = None,
    threads: int | None = None,
    lora: str | None = None,
    max_new_tokens: int = 1024,
    temperature: float = 0.0,
    show_pivot: bool = False,
    as_json: bool = False,
) -> int:
    check_gguf(model)  # a bad path is the error to report, not an empty stdin
    if lora:
        check_gguf(lora)
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
        if not prompt.strip():
            raise UserError("stdin is empty: give a prompt with --prompt or pipe text in")
    with ChatSession(model, fmt=fmt, target=target, pivot=pivot, think=think, system=system,
                     ctx=ctx, gpu_layers=gpu_layers, threads=threads, lora=lora,
                     max_new_tokens=max_new_tokens, temperature=temperature) as s:
        if prompt is None:
            return repl(s, show_pivot=show_pivot)
        if s.note:
            print(f"note: {s.note}", file=sys.stderr)
        d = s.answer(prompt.strip())
        if as_json:
            d["note"] = s.note
            print(json.dumps(d, ensure_ascii=False, indent=2))
        else:
            if show_pivot and d["pivot_instruction"] is not None:
                print(f"{s.pivot.instruction_header} {d['pivot_instruction']}\n\n"
                      f"{s.pivot.response_header} {d['pivot_response'] or ''}\n")
            print(d["answer"])
            if d["status"] not in ("ok", "plain"):
                print(f"[status {d['status']}]", file=sys.stderr)
        print(format_stats(s.last.stats), file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="plug-lite chat", description="Chat with a GGUF; the pivot is hidden while it streams.")
    ap.add_argument("model", help="a .gguf file")
    ap.add_argument("--prompt", help="answer this one prompt and exit (text on stdin does the same)")
    ap.add_argument("--json", dest="as_json", action="store_true", help="one-shot: print all sections, status and stats as JSON")
    ap.add_argument("--format", dest="fmt", choices=("plug", "mono"), help="override plug.format (mono: a baseline model)")
    ap.add_argument("--target", help="target language code (overrides plug.target)")
    ap.add_argument("--pivot", help="pivot language code (overrides plug.pivot, default en)")
    ap.add_argument("--think", action=argparse.BooleanOptionalAction, default=None, help="the <think> variant")
    ap.add_argument("--system", help="system prompt (default: the format's own)")
    ap.add_argument("--ctx", type=int, default=None, help=f"context size in tokens (default {DEFAULT_CTX}, capped by the model)")
    ap.add_argument("--gpu-layers", type=int, default=None, help="layers to offload (default: all when a GPU is usable)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lora", help="an adapter GGUF to apply over the base model")
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--show-pivot", action="store_true", help="print the pivot instruction and draft too")
    return ap


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli(lambda: main(**vars(args)))


if __name__ == "__main__":
    raise SystemExit(cli())
