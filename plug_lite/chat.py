"""``plug-lite chat``: talk to a GGUF with llama.cpp, the pivot hidden while it streams.

The shape follows litgpt's chat loop: a generator (:meth:`ChatSession.ask`) yields pieces of
text tagged with their section (:class:`plug_lite.formats.StreamEvent`); the REPL only prints.
:class:`plug_lite.formats.StreamParser` decides which section a piece belongs to, so this module
never looks at headers itself. The llama.cpp engine and the printer that streams an answer with its
pivot hidden are :mod:`plug_lite.engine`'s (``generate``, ``export`` and the notebooks share them).

What the model is told comes from the GGUF: ``plug.format``, ``plug.target``, ``plug.pivot`` and
``plug.think`` (written by ``plug-lite export``; read as a :class:`plug_lite.spec.PlugSpec`);
``--format/--target/--pivot/--think`` override them. A
GGUF without them is a plain chat model (a note says so). ``--prompted --target CODE`` asks any
instruct model for the PLUG format instead (:mod:`plug_lite.prompted`: an instruction, then worked
examples as the first turns, before the history); its answers stream and parse as a PLUG model's. When the GGUF has no
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

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Iterator

from . import formats, languages
from .cli import run
from .engine import EngineOptions, LlamaEngine, StreamPrinter, TurnStats, stats_line
from .formats import AnswerRecord, StreamEvent
from .gguf_meta import check as check_gguf
from .io import UserError
from .prompted import PROMPTED, PromptedPlug
from .spec import PlugSpec

__all__ = ["ChatSession", "Turn", "one_shot", "repl", "main", "cli"]


class ContextOverflow(UserError):
    """The conversation no longer fits the context window."""


# --------------------------------------------------------------------------------------------
# A conversation.


@dataclass
class Turn:
    """The outcome of one :meth:`ChatSession.ask`: the question, what the model wrote, its parse
    under the session's spec (None for a plain model) and the counts."""

    question: str
    output: str = ""
    parse: formats.PlugParse | None = None
    stats: TurnStats = field(default_factory=TurnStats)
    spec: PlugSpec | None = None
    fmt: str | None = None  # the format to record when not the spec's (prompted PLUG)

    @property
    def record(self) -> AnswerRecord:
        """The answer as every verb records one (:class:`plug_lite.formats.AnswerRecord`)."""
        if self.parse is None:
            return AnswerRecord.plain(self.output)
        rec = AnswerRecord.from_parse(self.parse, self.output, self.spec)
        return replace(rec, format=self.fmt) if self.fmt else rec

    def to_dict(self) -> dict:
        """The question, the answer record with the text before and after its sections, and the stats."""
        rec = self.record
        return {"question": self.question, **rec.to_dict(), "preamble": rec.preamble, "extra": rec.extra,
                "stats": asdict(self.stats)}


class ChatSession:
    """A multi-turn chat with a GGUF (loaded with ``options``, or an ``engine`` already loaded).
    ``ask(text)`` yields :class:`StreamEvent` s (section
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
        options: EngineOptions | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        prompted: PromptedPlug | None = None,
    ) -> None:
        self.engine = engine or LlamaEngine(model_path, options)
        self.note: str | None = None
        self.prompted = prompted  # prompted PLUG: the instruction and worked examples come first
        self.spec = prompted.spec if prompted else self.engine.spec(format=fmt, target=target, pivot=pivot, think=think)
        if self.spec is None:
            self.note = f"{self.engine.path.name} has no PLUG metadata (plug.*): plain chat"
        elif self.spec.format not in ("plug", "mono"):
            raise UserError(f"--format must be plug or mono for chat (got {self.spec.format!r})")
        # think: as given or recorded; neither accepts both variants when parsing
        self._think_known = think is not None or "think" in PlugSpec.gguf_values(self.engine.metadata)
        self.custom_system = system
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.history: list[dict] = []
        self.last: Turn | None = None

    # -- state
    @property
    def mode(self) -> str:
        """``plug``, ``mono`` or ``plain``."""
        return self.spec.format if self.spec else "plain"

    @property
    def target(self) -> languages.Language | None:
        return self.spec.target_language if self.spec else None

    @property
    def pivot(self) -> languages.Language:
        return self.spec.pivot_language if self.spec else languages.get("en")

    @property
    def think(self) -> bool | None:
        return self.spec.think if self.spec and self._think_known else None

    @property
    def system(self) -> str | None:
        if self.custom_system is not None:
            return self.custom_system or None
        if self.prompted:
            return self.prompted.system_prompt()
        return self.spec.system_prompt() if self.spec else None

    def reset(self) -> None:
        self.history = []

    def set_system(self, text: str | None) -> None:
        self.custom_system = text

    def set_lang(self, code: str) -> None:
        """Answer in another target language (a plain session becomes a PLUG one)."""
        if self.prompted:  # the instruction and worked examples of the new language
            p = self.prompted
            self.prompted = PromptedPlug.build(code, p.spec.pivot, shots=len(p.examples),
                                               examples=None if p.source == "sample" else p.source)
            self.spec = self.prompted.spec
        elif self.spec is None:
            self.spec = PlugSpec("plug", code)
        else:
            self.spec = PlugSpec(self.spec.format, code, self.spec.pivot, self.spec.think)

    def messages(self, text: str) -> list[dict]:
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        shots = self.prompted.shots() if self.prompted else []
        return msgs + shots + self.history + [{"role": "user", "content": text}]

    # -- one turn
    def ask(self, text: str) -> Iterator[StreamEvent]:
        """Stream the answer to ``text``; history is updated only when the answer completes."""
        t0 = time.perf_counter()
        turn = Turn(question=text, spec=self.spec, fmt=PROMPTED if self.prompted else None)
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
        return self.last.to_dict()

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
        printer = StreamPrinter(pivot=session.pivot, target=session.target, plug=session.mode == "plug",
                                show_pivot=show_pivot, out=out, err=err)
        gen = session.ask(text)
        try:
            printer.start()
            for ev in gen:
                printer.event(ev)
            printer.end(session.last.parse)
            print(stats_line(session.last.stats), file=err)
        except KeyboardInterrupt:
            gen.close()
            printer.interrupted()
            print("[answer stopped; the session goes on]", file=err)
        except (UserError, languages.LanguageError) as e:
            printer.clear()
            print(f"error: {e}", file=err)


def main(
    model: str,
    *,
    prompt: str | None = None,
    fmt: str | None = None,
    target: str | None = None,
    pivot: str | None = None,
    think: bool | None = None,
    system: str | None = None,
    options: EngineOptions = EngineOptions(),
    max_new_tokens: int = 1024,
    temperature: float = 0.0,
    show_pivot: bool = False,
    as_json: bool = False,
    prompted: bool = False,
    shots: int = 2,
    examples: str | None = None,
) -> int:
    """Chat with ``model`` in a terminal, or answer one prompt (``prompt``, or text on stdin).

    Args:
        model: a .gguf file
        prompt: answer this one prompt and exit (text on stdin does the same)
        fmt: plug or mono (default: the GGUF's plug.format; mono: a baseline model)
        target: target language code (default: the GGUF's plug.target)
        pivot: pivot language code (default: the GGUF's plug.pivot, else en)
        think: the <think> variant (default: the GGUF's plug.think)
        system: system prompt (default: the format's own)
        options: how llama.cpp loads the model (--ctx, --gpu-layers, --threads, --lora, --verbose)
        max_new_tokens: tokens per answer
        temperature: 0 = greedy
        show_pivot: print the pivot instruction and draft too
        as_json: one-shot: print all sections, status, stats and language confusion as JSON
        prompted: prompted PLUG: ask an instruct model (no PLUG training) for the PLUG format with an
            instruction and worked examples (needs --target); the pivot is hidden as for a PLUG model
        shots: prompted PLUG: worked examples in the prompt
        examples: prompted PLUG: file of worked examples (default: the shipped sample's)
    """
    check_gguf(model)  # a bad path is the error to report, not an empty stdin
    if options.lora:
        check_gguf(options.lora)
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
        if not prompt.strip():
            raise UserError("stdin is empty: give a prompt with --prompt or pipe text in")
    plug_prompt = None
    if prompted:
        if not target or fmt not in (None, "plug"):
            raise UserError("--prompted needs --target CODE (and asks for the plug format itself)")
        plug_prompt = PromptedPlug.build(target, pivot or "en", shots=shots, examples=examples)
    with ChatSession(model, fmt=fmt, target=target, pivot=pivot, think=think, system=system, options=options,
                     max_new_tokens=max_new_tokens, temperature=temperature, prompted=plug_prompt) as s:
        if prompt is None:
            return repl(s, show_pivot=show_pivot)
        if s.note:
            print(f"note: {s.note}", file=sys.stderr)
        d = s.answer(prompt.strip())
        rec = s.last.record
        if as_json:
            from .confusion import answer_confusion

            d["note"] = s.note
            d["confusion"] = answer_confusion(d)  # lines / words in the wrong language
            print(json.dumps(d, ensure_ascii=False, indent=2))
        else:
            if show_pivot and rec.pivot_instruction is not None:
                print(f"{s.pivot.instruction_header} {rec.pivot_instruction}\n\n"
                      f"{s.pivot.response_header} {rec.pivot_response or ''}\n")
            print(rec.answer)
            if rec.status not in ("ok", "plain"):
                print(f"[status {rec.status}]", file=sys.stderr)
        print(stats_line(s.last.stats), file=sys.stderr)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run(main, argv, prog="plug-lite chat", positional=("model",), names={"fmt": "--format", "as_json": "--json"},
               choices={"fmt": ("plug", "mono")}, exclude=("options.seed",), finish=lambda rc, args: rc)


if __name__ == "__main__":
    raise SystemExit(cli())
