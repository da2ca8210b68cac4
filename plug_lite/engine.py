"""The llama.cpp engine every verb shares: a loaded GGUF that formats chats and streams text
(:class:`LlamaEngine`), the counts of one answer (:class:`TurnStats`), a printer that streams an
answer with its pivot hidden or dimmed (:class:`StreamPrinter`), and how many CPU threads
llama.cpp should use here. Standard library only at import time (llama_cpp is imported by
:class:`LlamaEngine`).

Threads
-------

llama-cpp-python's own default is half of ``os.cpu_count()`` (it assumes two hardware threads per
core), which on a 2-core VM or a container pinned to a few CPUs leaves half the machine idle:
Gemma-3-270M Q8_0 decoded at 18.5 tokens/s with its default and 32.9 with 2 threads on a 2-core
machine. plug_lite counts the CPUs this process may actually run on:

* the CPU affinity mask (``taskset``, container cpusets), not the host's CPU count;
* a cgroup CPU quota (``cpu.max``; Docker ``--cpus``), rounded up;
* for **decode** (one token at a time, memory-bound) one thread per *physical* core among those
  CPUs: two hyper-threads of one core share its caches and memory port and make decode slower;
* for **prompt processing** (batched, compute-bound) every usable CPU.

``PLUG_LITE_THREADS`` or an explicit ``--threads`` overrides both.

Options and logs
----------------

What a verb may choose about llama.cpp (context size, GPU layers, threads, a LoRA adapter, the
seed, ``--verbose``) travels as one :class:`EngineOptions` value from the verb's ``main`` to
:class:`LlamaEngine`; the command line makes its fields flags (``--ctx``, ``--gpu-layers``, ...).

llama.cpp logs what it does while it loads a model (tensor types, context and cache sizes; for
Gemma 3 "llama_kv_cache_iswa: using full-size SWA cache") at its debug, info and warning levels.
None of it is something a user of ``chat`` or ``generate`` can act on: what plug_lite relies on
(the chat template, the end-of-turn token, room in the context) it checks itself and reports in
its own words. So only llama.cpp's errors are shown unless ``verbose`` is set
(:func:`llama_log`).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

from . import gguf_meta, templates
from .formats import StreamEvent
from .io import UserError
from .languages import Language
from .spec import PlugSpec

__all__ = ["usable_cpus", "physical_cores", "default_threads", "DEFAULT_CTX", "EngineOptions", "llama_log",
           "TurnStats", "LlamaEngine", "Greedy", "stats_line", "StreamPrinter"]

#: The context size when none is asked for (capped by what the model was trained for).
DEFAULT_CTX = 4096


def _cgroup_quota() -> int | None:
    """CPUs allowed by a cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota, rounded up."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return max(1, math.ceil(int(text[0]) / int(text[1])))
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> list[int]:
    """The logical CPUs this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def physical_cores(cpus: list[int]) -> int:
    """Distinct physical cores behind ``cpus`` (Linux sysfs topology; else ``len(cpus)``)."""
    cores = set()
    for c in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def default_threads() -> tuple[int, int]:
    """(decode threads, prompt-processing threads) for llama.cpp on this machine."""
    env = os.environ.get("PLUG_LITE_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), int(env)
    cpus = usable_cpus()
    logical = len(cpus) or 1
    decode = physical_cores(cpus)
    quota = _cgroup_quota()
    if quota is not None:
        logical = min(logical, quota)
        decode = min(decode, quota)
    return max(1, decode), max(1, logical)


# --------------------------------------------------------------------------------------------
# What a verb may choose about llama.cpp, and its log.


@dataclass(frozen=True)
class EngineOptions:
    """How llama.cpp loads and runs a GGUF. ``chat`` and ``generate`` take one (each field is a
    flag); export's parity check loads its files with ``ctx=1024``."""

    ctx: int | None = field(default=None, metadata={"help": "llama.cpp context size in tokens (default 4096, capped by the model)"})
    gpu_layers: int | None = field(default=None, metadata={"help": "layers llama.cpp offloads to the GPU (default: all when a GPU is usable)"})
    threads: int | None = field(default=None, metadata={"help": "llama.cpp CPU threads (default: every usable core)"})
    lora: str | None = field(default=None, metadata={"help": "an adapter GGUF to apply over the base model (llama.cpp)"})
    seed: int = field(default=0, metadata={"help": "llama.cpp's sampling seed"})
    verbose: bool = field(default=False, metadata={"help": "show llama.cpp's own log (by default only its errors)"})


# ggml's log levels (ggml.h, enum ggml_log_level); CONT continues the previous message.
_NONE, _DEBUG, _INFO, _WARN, _ERROR, _CONT = range(6)
_log_state = {"shown_from": _ERROR, "last": _NONE, "callback": None, "held": None}


def llama_log(verbose: bool = False) -> None:
    """Route llama.cpp's log (every model and context it loads, in this process) to stderr:
    only its errors, or everything when ``verbose``. See the module doc for why.

    This replaces llama-cpp-python's own filter, which in 0.3.36 reads ggml's levels with an older
    numbering (INFO=1, WARN=2, ERROR=3; ggml.h now has DEBUG=1, INFO=2, WARN=3, ERROR=4): with
    ``verbose=False`` it prints llama.cpp's warnings, such as Gemma 3's SWA cache line at every
    start of ``plug-lite chat``, and drops its errors.
    """
    import ctypes

    import llama_cpp

    _log_state["shown_from"] = _NONE if verbose else _ERROR
    if _log_state["callback"] is None:
        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data) -> None:
            if level != _CONT:
                _log_state["last"] = level
            if _log_state["held"] is not None and _log_state["last"] >= _ERROR:
                _log_state["held"].append(text.decode("utf-8", "replace"))
            elif _log_state["last"] >= _log_state["shown_from"]:
                sys.stderr.write(text.decode("utf-8", "replace"))
                sys.stderr.flush()

        _log_state["callback"] = callback  # kept: llama.cpp holds only a pointer to it
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


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


class Greedy(list):
    """Greedy tokens before the end of turn; ``stopped`` is True when the model ended its turn,
    ``end`` the text of the token it ended with."""

    stopped: bool = False
    end: str | None = None


class LlamaEngine:
    """A GGUF loaded with llama-cpp-python, and what its metadata says about PLUG."""

    def __init__(self, model_path: str | os.PathLike, options: EngineOptions | None = None, *,
                 vocab_only: bool = False, batch: int | None = None, **fields) -> None:
        """Load ``model_path`` with ``options`` (``fields`` of :class:`EngineOptions` given by
        keyword override them: ``LlamaEngine(path, ctx=1024)``). ``vocab_only``: the tokenizer and
        chat template but no weights (formatting and tokenizing only). ``batch``: tokens per
        llama.cpp batch (llama-cpp-python's default 512); the context keeps room for that many rows
        of logits, vocabulary-wide."""
        import llama_cpp

        self.options = opts = replace(options or EngineOptions(), **fields)
        self.path = gguf_meta.check(model_path)
        lora = gguf_meta.check_lora(opts.lora, self.path) if opts.lora is not None else None
        header = gguf_meta.read_metadata(self.path)
        self.architecture = header.get("general.architecture")
        train_ctx = header.get(f"{self.architecture}.context_length")
        self.context_length = int(train_ctx) if train_ctx else None
        # The default is capped by what the model was trained for; an explicit ctx is kept when
        # the model allows it.
        if opts.ctx is not None and opts.ctx < 1:
            raise UserError(f"--ctx {opts.ctx}: the context must be at least 1 token")
        if opts.ctx is not None and self.context_length and opts.ctx > self.context_length:
            raise UserError(f"--ctx {opts.ctx}: {self.path.name} was trained for {self.context_length} tokens at most")
        n_ctx = opts.ctx or min(DEFAULT_CTX, self.context_length or DEFAULT_CTX)
        gpu_layers = opts.gpu_layers
        if gpu_layers is None:
            gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        self.gpu_layers = gpu_layers
        # every usable core unless threads says otherwise (llama-cpp-python's own default is half)
        n_threads, n_threads_batch = (opts.threads, opts.threads) if opts.threads else default_threads()
        self.threads = (n_threads, n_threads_batch)
        llama_log(opts.verbose)
        kwargs = dict(n_gpu_layers=gpu_layers, seed=opts.seed, verbose=opts.verbose, n_ctx=n_ctx,
                      n_threads=n_threads, n_threads_batch=n_threads_batch)
        if vocab_only:
            kwargs["vocab_only"] = True
        if batch:
            kwargs["n_batch"] = batch
        try:
            if vocab_only:
                # llama.cpp warns that a context of any size exceeds the vocabulary-only model's
                # training context of 0; llama-cpp-python passes that warning to sys.stderr.
                import contextlib
                import io

                with contextlib.redirect_stderr(io.StringIO()):
                    self.llm = llama_cpp.Llama(model_path=str(self.path), **kwargs)
            else:
                self.llm = llama_cpp.Llama(model_path=str(self.path), **kwargs)
        except (ValueError, RuntimeError, OSError) as e:
            raise UserError(f"{self.path}: llama.cpp could not load the file (truncated or corrupt GGUF? {e})") from None
        if lora is not None:
            self._apply_lora(lora)
        meta = dict(self.llm.metadata or {})
        self.metadata = meta
        # llama.cpp rounds the context up (to a multiple of 256) but llama-cpp-python keeps the
        # tokens in a buffer of the size asked for: past that, its eval fails. The smaller counts.
        self.n_ctx = min(self.llm.n_ctx(), n_ctx)
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
        self._whole_formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=piece(eos_id), bos_token=piece(bos_id), add_generation_prompt=False
        )
        self._bos = bos_id
        self._add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self._vocab = vocab
        self._is_eog = llama_cpp.llama_vocab_is_eog

    def _apply_lora(self, lora: Path) -> None:
        """Apply a LoRA adapter GGUF (scale 1) to the loaded model. Done here rather than with
        ``Llama(lora_path=...)``: llama-cpp-python 0.3.36 tests llama.cpp's answer with ``is None``,
        but a refused adapter comes back as a NULL pointer, which it then hands to llama.cpp
        (a segmentation fault at the first prompt). :func:`gguf_meta.check_lora` refuses the
        adapters we can recognise as wrong before this; this catches the rest."""
        import ctypes

        import llama_cpp

        _log_state["held"] = held = []  # llama.cpp's reason goes into our one line, not beside it
        try:
            adapter = llama_cpp.llama_adapter_lora_init(self.llm.model, str(lora).encode("utf-8"))
        finally:
            _log_state["held"] = None
        if not adapter:  # a NULL pointer is falsy
            self.close()
            why = " ".join("".join(held).split()).rpartition("failed to apply lora adapter: ")[2]
            raise UserError(f"{lora}: llama.cpp refused the adapter for {self.path.name}" + (f" ({why})" if why else ""))
        self.llm._stack.callback(llama_cpp.llama_adapter_lora_free, adapter)
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
        if llama_cpp.llama_set_adapters_lora(self.llm.ctx, adapters, 1, (ctypes.c_float * 1)(1.0)):
            self.close()
            raise UserError(f"{lora}: llama.cpp could not apply the adapter to {self.path.name}")

    def spec(self, **overrides) -> PlugSpec | None:
        """The PLUG spec the GGUF records (``plug.*``) with ``overrides``; None for a plain model."""
        return PlugSpec.from_gguf(self.metadata, where=self.path.name, **overrides)

    # -- prompts
    def format(self, messages: list[dict], *, generation_prompt: bool = True) -> tuple[str, list[str]]:
        """The rendered prompt and its stop strings (``generation_prompt=False``: a whole
        conversation, ending with its last message)."""
        out = (self._formatter if generation_prompt else self._whole_formatter)(messages=messages)
        stop = out.stop if isinstance(out.stop, list) else ([out.stop] if out.stop else [])
        return out.prompt, [s for s in stop if s]

    def tokenize(self, messages: list[dict], *, generation_prompt: bool = True) -> tuple[list[int], list[str]]:
        prompt, stop = self.format(messages, generation_prompt=generation_prompt)
        return self.tokenize_text(prompt), stop

    def tokenize_text(self, text: str) -> list[int]:
        """Token ids of rendered text, special tokens parsed; BOS added only when the model wants
        one and the text does not start with it (templates such as Gemma's write it themselves,
        and llama.cpp would warn about two)."""
        toks = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._add_bos and self._bos >= 0 and (not toks or toks[0] != self._bos):
            toks = [self._bos, *toks]
        return toks

    def pieces(self, ids: list[int]) -> list[bytes]:
        """The bytes each token stands for, special tokens written out (their concatenation is
        the text a token sequence came from)."""
        import ctypes

        import llama_cpp

        out, buf = [], ctypes.create_string_buffer(256)
        for t in ids:
            n = llama_cpp.llama_token_to_piece(self._vocab, int(t), buf, len(buf), 0, True)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, int(t), buf, len(buf), 0, True)
            out.append(buf.raw[:n])
        return out

    def logits(self, ids: list[int], positions: list[int] | None = None):
        """The next-token logits after each position of ``ids``, or only after ``positions``: a
        float32 array, one row per position, from a fresh context. llama.cpp computes the output
        layer only at those positions (the batch's output flags)."""
        import llama_cpp
        import numpy as np

        if len(ids) > self.n_ctx:
            raise UserError(f"{self.path}: {len(ids)} tokens do not fit the context of {self.n_ctx}")
        positions = list(range(len(ids))) if positions is None else [int(p) for p in positions]
        row_of = {p: i for i, p in enumerate(positions)}
        ctx, n_vocab, n_batch = self.llm.ctx, self.llm.n_vocab(), self.llm.n_batch
        self.llm.reset()
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        out = np.empty((len(positions), n_vocab), dtype=np.float32)
        batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        try:
            for start in range(0, len(ids), n_batch):
                chunk = ids[start:start + n_batch]
                batch.n_tokens = len(chunk)
                for j, tok in enumerate(chunk):
                    batch.token[j] = int(tok)
                    batch.pos[j] = start + j
                    batch.n_seq_id[j] = 1
                    batch.seq_id[j][0] = 0
                    batch.logits[j] = (start + j) in row_of
                if llama_cpp.llama_decode(ctx, batch) != 0:
                    raise UserError(f"{self.path}: llama.cpp could not evaluate {len(ids)} tokens")
                for j in range(len(chunk)):
                    row = row_of.get(start + j)
                    if row is not None:
                        out[row] = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, j), shape=(n_vocab,))
        finally:
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        return out

    # -- generation
    def stream(
        self,
        prompt_tokens: list[int],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        stop: list[str] = (),
        seed: int | None = None,
        sampling: dict | None = None,
    ) -> Iterator[tuple[str, int]]:
        """Yield (text delta, completion tokens so far). Stops at an end-of-generation token, a
        stop string or ``max_tokens``; sets :attr:`finish_reason`. ``sampling``: more keywords of
        ``Llama.generate`` (``top_p``, ``top_k``, ``min_p``, ``presence_penalty``,
        ``frequency_penalty``, ``repeat_penalty``). Each delta is whole characters: a character
        whose UTF-8 bytes span several tokens comes out once all of them are generated. ``seed``
        is for this answer only: the engine's own seed is back in place once it ends."""
        # llama-cpp-python keeps a seed given to set_seed for every sampler it builds afterwards
        own = self.llm._seed
        if seed is not None:
            self.llm.set_seed(seed)
        try:
            yield from self._stream(prompt_tokens, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                    sampling=sampling)
        finally:
            self.llm.set_seed(own)

    def _stream(self, prompt_tokens: list[int], *, max_tokens: int, temperature: float, stop: list[str],
                sampling: dict | None) -> Iterator[tuple[str, int]]:
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.finish_reason = "length"
        n = 0
        held = ""  # text that could still become a stop string
        kw = dict(sampling or {}, temp=temperature) if temperature > 0 else dict(sampling or {}, temp=0.0, top_k=1)
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
                # the longest end of held that begins a stop string (no longer than held: a stop
                # string can be megabytes long)
                keep = max((k for s in stop for k in range(min(len(s) - 1, len(held)), 0, -1)
                            if held.endswith(s[:k])), default=0)
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

    def greedy(self, ids: list[int], max_new: int, stop: set[int]) -> Greedy:
        """Greedy token ids after the prompt ``ids`` (no repeat penalty, no top-p or min-p), up
        to a token of ``stop``, any end-of-generation token of the file (as llama.cpp's servers
        stop) or ``max_new`` tokens."""
        self.llm.reset()
        out = Greedy()
        for tok in self.llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
            if tok in stop or self._is_eog(self._vocab, tok):
                out.stopped = True
                out.end = self.llm._model.token_get_text(tok)
                break
            out.append(int(tok))
            if len(out) >= max_new:
                break
        return out

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None


# --------------------------------------------------------------------------------------------
# Showing an answer as it streams.

DIM, RESET = "\033[2m", "\033[0m"


def stats_line(st: TurnStats) -> str:
    """One line about a turn: decode speed, time to the first answer character, pivot and answer
    tokens, and why it stopped when it did not end by itself."""
    tps = f"{st.decode_tokens_per_s:.1f} tok/s" if st.decode_tokens_per_s else "- tok/s"
    ft = f"{st.first_target_s:.2f}s" if st.first_target_s is not None else "-"
    extra = "" if st.finish_reason == "stop" else f", stopped: {st.finish_reason}"
    return (f"[{tps}, first answer token after {ft}, pivot {st.pivot_tokens} tokens, "
            f"answer {st.target_tokens} tokens{extra}]")


class StreamPrinter:
    """Prints one answer's :class:`~plug_lite.formats.StreamEvent` s to ``out`` as they come: the
    pivot hidden behind a "thinking in ..." line on ``err`` (cleared on a terminal), or shown
    with its headers, dimmed on a terminal. ``plug`` says whether a pivot is to be expected."""

    def __init__(self, *, pivot: Language, target: Language | None, plug: bool, show_pivot: bool, out, err) -> None:
        self.pivot, self.target, self.plug, self.show_pivot = pivot, target, plug, show_pivot
        self.out, self.err = out, err
        self.color = out.isatty()
        self.err_tty = err.isatty()
        self.indicator = False
        self.section = None
        self.dimmed = False

    def start(self) -> None:
        if self.plug and not self.show_pivot:
            self.err.write(f"thinking in {self.pivot.name}...")
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
                label = {"pivot_instruction": self.pivot.instruction_header,
                         "pivot_response": self.pivot.response_header}.get(ev.section, "")
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

    def end(self, parse) -> None:
        """The answer is complete (``parse``: its :class:`~plug_lite.formats.PlugParse`, or None
        for a plain model)."""
        self.clear()
        self._write("")  # ends dimming
        if parse is not None and parse.target is None and not self.show_pivot:
            # No target section: show what the model wrote instead, so the turn is not blank.
            self._write(parse.answer)
            name = self.target.name if self.target else "target-language"
            self.err.write(f"[no {name} answer found: status {parse.status}]\n")
        self.out.write("\n")
        self.out.flush()

    def interrupted(self) -> None:
        """The answer was stopped (Ctrl-C): clear the indicator, end dimming, end the line."""
        self.clear()
        self._write("")
        self.out.write("\n")
