"""The command line. Standard library only.

* ``plug-lite <verb> ...`` and ``python -m plug_lite <verb> ...``: one subcommand per module
  (:data:`VERBS`); ``python -m plug_lite.<verb>`` is the same command.
* Each verb's flags are made here from its typed ``main(...)`` (:func:`run`, :func:`parser_for`)
  or, for ``train``, its config dataclass (:func:`dataclass_params`): a parameter ``max_new_tokens:
  int = 1024`` is the flag ``--max-new-tokens`` (an ``int``, default 1024), a ``bool`` is a
  ``--x/--no-x`` pair, a list is a repeatable flag, a parameter without a default is required.
  The help text of each flag is the parameter's line under ``Args:`` in main's docstring, the
  command's description the docstring's first paragraph. A verb only names what a signature
  cannot say: positional arguments, other flag names (``fmt`` is ``--format``; ``--lang`` is kept
  as another name of ``--target``), choices.
* One more rule: a parameter whose type is a dataclass (settings that travel together, such as
  :class:`plug_lite.engine.EngineOptions` or :class:`plug_lite.llm.LLMSettings`) becomes its
  fields' flags: field ``ctx`` of ``options: EngineOptions = EngineOptions()`` is ``--ctx``, its
  default the parameter's default's, its help the line ``options.ctx:`` under ``Args:`` or else the
  field's ``metadata["help"]``; the flags given are gathered back into one value for ``main``. In
  ``names``, ``exclude``, ``choices`` and ``extra`` such a field is ``options.ctx``.
* What a value must be is said once, by name: :data:`CHECKS` holds the range of every count,
  size, rate and time (``max_new_tokens`` at least 1, ``temperature`` a finite number at least 0,
  ``timeout`` above 0, ...) and the kind of every output path (``out`` a file, ``*_dir`` a
  folder) for every verb at once; a parameter annotated ``Annotated[str, FOLDER]`` (or any other
  :class:`Range` / :class:`PathKind`) says its own (judge's and report's ``--out`` are folders).
  The flags given are checked after parsing (:func:`check_values`, also run on ``train``'s
  config file): a value out of range or a path of the wrong kind is one line naming the flag and
  the value, exit status 2, before anything runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import math
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Mapping

__all__ = ["VERBS", "Param", "Range", "PathKind", "FILE", "FOLDER", "CHECKS", "check_values", "description",
           "function_params", "dataclass_params", "flag_params", "value_type", "add_arguments", "parser_for", "parse",
           "run", "usage", "main"]

#: verb -> (module, one-line summary)
VERBS = {
    "data": ("data", "build PLUG / mono / pivot-only SFT rows (prompt-completion JSONL)"),
    "extract": ("extract", "extract the target answer and pivot sections from model outputs"),
    "train": ("train", "LoRA / QLoRA SFT with TRL (Unsloth when present)"),
    "export": ("export", "merge, convert to GGUF, quantize, verify parity"),
    "share": ("share", "model card, Ollama Modelfile, Hub upload"),
    "chat": ("chat", "chat with a GGUF, the pivot hidden while it streams"),
    "serve": ("serve", "an OpenAI-compatible HTTP server for a GGUF, the pivot in reasoning_content"),
    "generate": ("generate", "answer every instruction of an evaluation set (resumable)"),
    "judge": ("judge", "pairwise / single-answer LLM judge (cached, resumable)"),
    "report": ("report", "Markdown + JSON report with plots"),
    "translate": ("translate", "translate an instruction dataset with an LLM"),
    "demo": ("demo", "the whole loop offline on the embedded Gemma-3-270M"),
}

_REQUIRED = inspect.Parameter.empty


# --------------------------------------------------------------------------------------------
# What a value must be


@dataclass(frozen=True)
class Range:
    """The numbers a count, size, rate or time may take: from ``low`` to ``high`` (``None``: no
    bound; ``low_open`` / ``high_open``: the bound itself excluded), finite, or one of ``also``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple = ()

    def says(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        lo = None if self.low is None else ("above " if self.low_open else "at least ") + num(self.low)
        hi = None if self.high is None else ("below " if self.high_open else "at most ") + num(self.high)
        text = " and ".join(x for x in (lo, hi) if x) or "a finite number"
        return " or ".join([*map(num, self.also), text])

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not one of these numbers (None when it is)."""
        if value in self.also:
            return None
        if not (isinstance(value, int) or math.isfinite(value)):
            return f"not a finite number; must be {self.says()}"
        ok = True
        if self.low is not None:
            ok = value > self.low if self.low_open else value >= self.low
        if ok and self.high is not None:
            ok = value < self.high if self.high_open else value <= self.high
        return None if ok else f"must be {self.says()}"


@dataclass(frozen=True)
class PathKind:
    """What an output path must be: a file to write (not an existing folder) or a folder to write
    into (not an existing file); either way, no file on the way to it."""

    folder: bool

    def problem(self, value: Any) -> str | None:
        p = Path(str(value))
        if self.folder and p.exists() and not p.is_dir():
            return "is a file; this output is a folder"
        if not self.folder and p.is_dir():
            return "is a folder; this output is a file (give a file name)"
        up = p.parent
        while not up.exists() and up != up.parent:
            up = up.parent
        if up.exists() and not up.is_dir():
            return f"{up} is a file, not a folder"
        return None


FILE, FOLDER = PathKind(folder=False), PathKind(folder=True)
_COUNT, _COUNT0 = Range(1), Range(0)

#: What the value of a parameter (or a dataclass field) of this name must be, in every verb that
#: has one; a parameter's own ``Annotated[type, Range(...) | PathKind(...)]`` overrides it.
CHECKS: dict[str, Range | PathKind] = {
    # counts and sizes: at least 1 (a limit of 0, a rank of 0, an answer of 0 tokens do nothing)
    **dict.fromkeys(("max_new_tokens", "max_tokens", "limit", "eval_limit", "parallel", "batch_size", "grad_accum",
                     "max_length", "lora_r", "lora_alpha", "save_steps", "logging_steps", "max_samples",
                     "max_train_samples", "train_rows", "steps", "n_prompts", "stop_budget", "threads"), _COUNT),
    # counts that may be 0 (no retry, no bootstrap, no preview)
    **dict.fromkeys(("max_retries", "bootstrap", "preview_rows", "shots", "drift_rows"), _COUNT0),  # drift_rows 0: no drift check
    "max_steps": Range(1, also=(-1,)),  # -1: run --epochs epochs
    "gpu_layers": Range(-1),  # -1: every layer
    "seed": Range(0, 2**32 - 1),  # what numpy, torch and llama.cpp all take
    "port": Range(0, 65535),  # 0: any free port
    # rates, prices and times: finite numbers
    **dict.fromkeys(("temperature", "price_in", "price_out", "max_drift"), Range(0)),
    **dict.fromkeys(("timeout", "lr", "epochs", "batch_poll"), Range(0, low_open=True)),
    "lora_dropout": Range(0, 1, high_open=True),
    # output paths: most verbs write one file; a verb whose --out is a folder says so in its signature
    **dict.fromkeys(("out", "cache", "rejects", "write_requests"), FILE),
    **dict.fromkeys(("out_dir", "output_dir", "work_dir", "gguf_dir"), FOLDER),
}


def _check_of(name: str, hint: Any) -> tuple[Any, Range | PathKind | None]:
    """(the type without ``Annotated``, the check of a parameter named ``name``)."""
    if typing.get_origin(hint) is Annotated:
        found = [m for m in hint.__metadata__ if isinstance(m, (Range, PathKind))]
        return hint.__origin__, (found[0] if found else CHECKS.get(name.rpartition(".")[2]))
    return hint, CHECKS.get(name.rpartition(".")[2])


def check_values(params: Iterable["Param"], values: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> None:
    """A one-line :class:`plug_lite.io.UserError` naming the flag (``labels[name]``, else
    ``--the-name``) and the value of the first value in ``values`` (by parameter name) that its
    parameter's check refuses; values of None (unset) pass."""
    from .io import UserError

    labels = labels or {}
    for p in params:
        if p.check is None or values.get(p.name) is None:
            continue
        value = values[p.name]
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, bool) or (isinstance(p.check, Range) and not isinstance(v, (int, float))):
                continue
            why = p.check.problem(v)
            if why:
                label = labels.get(p.name) or "--" + p.name.rpartition(".")[2].replace("_", "-")
                raise UserError(f"{label} {v}: {why}")


@dataclass(frozen=True)
class Param:
    """One command-line parameter: its name, Python type, default (``_REQUIRED`` when none), help,
    and what its value must be (:data:`CHECKS`)."""

    name: str
    type: Any
    default: Any
    help: str = ""
    check: Range | PathKind | None = None


def _param(name: str, hint: Any, default: Any, help: str) -> Param:
    tp, check = _check_of(name, hint)
    return Param(name, tp, default, help, check)


def _doc_args(doc: str | None) -> dict[str, str]:
    """``name: text`` entries under ``Args:`` in a docstring (continuation lines indented deeper;
    ``name`` may be ``param.field``)."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    inside, indent, name = False, None, None
    for line in lines:
        if re.fullmatch(r"(Args|Arguments|Parameters):\s*", line.strip()):
            inside, indent, name = True, None, None
            continue
        if not inside:
            continue
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            inside = False
            continue
        m = re.match(r"\s*([\w.]+):\s*(.*)", line)
        if depth == indent and m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name:
            out[name] = (out[name] + " " + line.strip()).strip()
    return out


def description(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].replace("``", "").split())


def function_params(fn: Callable, exclude: Iterable[str] = ()) -> list[Param]:
    """The parameters of ``fn`` (types from its annotations, help from its docstring's ``Args:``)."""
    hints = typing.get_type_hints(fn, include_extras=True)
    helps = _doc_args(fn.__doc__)
    return [_param(p.name, hints.get(p.name, str), p.default, helps.get(p.name, ""))
            for p in inspect.signature(fn).parameters.values()
            if p.name not in exclude and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def dataclass_params(cls: type) -> list[Param]:
    """The fields of a dataclass (help from each field's ``metadata["help"]``)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return [_param(f.name, hints[f.name], f.default, f.metadata.get("help", "")) for f in dataclasses.fields(cls)]


def _is_settings(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def flag_params(fn: Callable, exclude: Iterable[str] = ()) -> list[Param]:
    """The parameters of ``fn`` as flags: a dataclass parameter ``p`` is replaced by its fields,
    named ``p.field`` (see the module doc)."""
    exclude = set(exclude)
    helps = _doc_args(fn.__doc__)
    out: list[Param] = []
    for p in function_params(fn, exclude):
        if not _is_settings(p.type):
            out.append(p)
            continue
        hints = typing.get_type_hints(p.type, include_extras=True)
        value = None if p.default is _REQUIRED else p.default
        for f in dataclasses.fields(p.type):
            name = f"{p.name}.{f.name}"
            if name in exclude or not f.init:
                continue
            if value is not None:
                default = getattr(value, f.name)
            elif f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = _REQUIRED
            out.append(_param(name, hints[f.name], default, helps.get(name) or f.metadata.get("help", "")))
    return out


def value_type(tp: Any) -> tuple[type, bool]:
    """(the value type argparse converts to, whether it is a list) of an annotation."""
    args = typing.get_args(tp) if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union else (tp,)
    args = [a for a in args if a is not type(None)]
    for a in args:
        if typing.get_origin(a) in (list, tuple) or a in (list, tuple):
            return str, True
    for t in (bool, int, float):
        if t in args:
            return t, False
    return str, False


def _default_text(default: Any) -> str:
    if default is None or default is _REQUIRED or isinstance(default, (bool, list, tuple)) or default == "":
        return ""
    return f" (default: {default})"


def add_arguments(ap: argparse.ArgumentParser, params: list[Param], *, positional: Iterable[str] = (),
                  names: dict[str, str | tuple[str, ...]] | None = None, choices: dict[str, Iterable] | None = None,
                  extra: dict[str, dict] | None = None, suppress: bool = False) -> None:
    """Add one argument per parameter to ``ap``. ``positional``: parameters given by position
    (optional when they have a default); ``names``: flag names other than ``--the-name`` (the
    first is the main one); ``choices``; ``extra``: more ``add_argument`` keywords by parameter;
    ``suppress``: leave unset flags out of the result (a config file fills them)."""
    names, choices, extra = names or {}, choices or {}, extra or {}
    for p in params:
        typ, many = value_type(p.type)
        required = p.default is _REQUIRED
        text = p.help + ("" if "default" in p.help.lower() else _default_text(p.default))
        kw: dict[str, Any] = {"help": text.replace("%", "%%") or None}
        if p.name in choices:
            kw["choices"] = tuple(choices[p.name])
        if p.name in positional:
            kw["nargs"] = "*" if many else (None if required else "?")
            if not required and not many:
                kw["default"] = p.default
            if typ is not str:
                kw["type"] = typ
            kw.update(extra.get(p.name, {}))
            ap.add_argument(p.name, **kw)
            continue
        flags = names.get(p.name) or "--" + p.name.rpartition(".")[2].replace("_", "-")
        flags = (flags,) if isinstance(flags, str) else tuple(flags)
        kw["dest"] = p.name
        if typ is bool and not many:
            kw["action"] = argparse.BooleanOptionalAction
        elif many:
            kw["action"] = "append"
            kw.setdefault("metavar", p.name.rstrip("s").upper())
        elif typ is not str:
            kw["type"] = typ
        if "." in p.name and kw.get("action") in (None, "append"):  # a field's value is named as its flag, not "OWNER.FIELD"
            kw["metavar"] = flags[0].lstrip("-").replace("-", "_").upper()
        if required:
            kw["required"] = True
        elif suppress:
            kw["default"] = argparse.SUPPRESS
        else:
            kw["default"] = None if many else p.default
        kw.update(extra.get(p.name, {}))
        ap.add_argument(*flags, **kw)


class Parser(argparse.ArgumentParser):
    """argparse's parser whose errors (a flag's bad value, an unknown or missing flag) are one line
    and status 2, like every other user error, instead of the whole usage block before it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} ({self.prog} --help lists the options)\n")


def parser_for(fn: Callable, *, prog: str, exclude: Iterable[str] = (), parser: argparse.ArgumentParser | None = None,
               **how) -> argparse.ArgumentParser:
    """An argument parser for ``fn``'s parameters (``how``: see :func:`add_arguments`); its
    description is the first paragraph of ``fn``'s module docstring unless ``parser`` is given."""
    ap = parser or Parser(prog=prog, description=description(sys.modules[fn.__module__].__doc__))
    add_arguments(ap, flag_params(fn, exclude), **how)
    return ap


def parse(ap: argparse.ArgumentParser, fn: Callable, argv: list[str] | None, drop: Iterable[str] = ()) -> dict:
    """Parsed arguments as ``fn``'s keyword arguments: a flag left unset whose parameter has a
    default other than None is left out (so ``fn`` keeps its default, e.g. for list parameters);
    the flags of a dataclass parameter's fields make one value of it (its default with the fields
    given; fields without a flag keep the default's values). A value its parameter's check refuses
    (:data:`CHECKS`) ends the program as argparse does, with one line naming the flag (status 2)."""
    from .io import UserError

    params = {p.name: p for p in function_params(fn)}
    given = vars(ap.parse_args(argv))
    labels = {a.dest: (a.option_strings or [a.dest.upper()])[0] for a in _actions(ap)}
    try:
        check_values(flag_params(fn), given, labels)
    except UserError as e:
        ap.exit(2, f"error: {e}\n")
    out: dict[str, Any] = {}
    fields: dict[str, dict[str, Any]] = {}
    for k, v in given.items():
        if k in drop:
            continue
        owner, dot, name = k.partition(".")
        if dot:
            fields.setdefault(owner, {})[name] = v
        elif v is not None or k not in params or params[k].default is None:
            out[k] = v
    for owner, values in fields.items():
        p = params[owner]
        if p.default is _REQUIRED:
            out[owner] = p.type(**values)
        else:  # as above: an unset flag keeps the default's value
            given = {k: v for k, v in values.items() if v is not None or getattr(p.default, k) is None}
            out[owner] = dataclasses.replace(p.default, **given)
    return out


def _actions(ap: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions of ``ap`` and of its subcommands' parsers."""
    out = []
    for a in ap._actions:
        out.append(a)
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                out += _actions(sub)
    return out


def run(fn: Callable, argv: list[str] | None, *, prog: str, finish: Callable[[Any, dict], int] | None = None,
        **how) -> int:
    """The command for ``fn``: parse ``argv`` into its keyword arguments, call it and return the
    exit status (``finish(result, arguments)`` prints what the verb prints and picks the status;
    by default 0). Bad input is one line on stderr and status 2 (:func:`plug_lite.io.run_cli`)."""
    from .io import run_cli

    ap = parser_for(fn, prog=prog, **how)
    args = parse(ap, fn, argv)
    return run_cli(lambda: finish(fn(**args), args) if finish else (fn(**args) and 0))


# --------------------------------------------------------------------------------------------
# plug-lite <verb>


def usage() -> str:
    lines = ["usage: plug-lite <verb> [options]   (plug-lite <verb> --help for each)", "", "verbs:"]
    lines += [f"  {verb:<10} {summary}" for verb, (_, summary) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, rest = argv[0], argv[1:]
    if verb in ("-V", "--version"):
        from . import __version__

        print(__version__)
        return 0
    if verb not in VERBS:
        print(f"error: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"plug_lite.{VERBS[verb][0]}")
    return module.cli(rest)


if __name__ == "__main__":
    raise SystemExit(main())
