"""``plug-lite <verb> ...``: one subcommand per module. Each verb module has a typed ``main(...)``
and a ``cli(argv) -> exit code``; ``python -m plug_lite.<verb>`` is the same command."""

from __future__ import annotations

import importlib
import sys

#: verb -> (module, one-line summary)
VERBS = {
    "data": ("data", "build PLUG / mono / pivot-only SFT rows (prompt-completion JSONL)"),
    "extract": ("extract", "extract the target answer and pivot sections from model outputs"),
    "train": ("train", "LoRA / QLoRA SFT with TRL (Unsloth when present)"),
    "export": ("export", "merge, convert to GGUF, quantize, verify parity"),
    "share": ("share", "model card, Ollama Modelfile, Hub upload"),
    "chat": ("chat", "chat with a GGUF, the pivot hidden while it streams"),
    "generate": ("generate", "answer every instruction of an evaluation set (resumable)"),
    "judge": ("judge", "pairwise / single-answer LLM judge (cached, resumable)"),
    "report": ("report", "Markdown + JSON report with plots"),
    "translate": ("translate", "translate an instruction dataset with an LLM"),
    "demo": ("demo", "the whole loop offline on the embedded Gemma-3-270M"),
}


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
