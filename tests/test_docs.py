"""The commands in README.md and docs/*.md run as written.

* Every fenced shell block (```bash, ```sh, ```shell) is read. Each command in it that runs
  plug_lite (``plug-lite VERB ...``, ``python -m plug_lite VERB ...``, ``python -m
  plug_lite.MODULE ...``, also after ``accelerate launch ... -m`` / ``torchrun ... -m``, and
  ``make demo DEMO_ARGS="..."``) has every ``--flag`` checked against that command's real
  ``--help``, subcommands included (``data build``). So have the ``plug-lite ...`` commands quoted
  inline in the prose and the commands in the ``configs/*.yaml`` headers; a flag quoted alone in
  the prose (```--max-retries```) must be a flag of some plug_lite command.
* Each shell block is then run as written, page by page in the page's order, by bash in a scratch
  folder laid out like a checkout (the shipped folders linked in; ``plug-lite`` and ``python`` are
  this interpreter), unless the line before it says why it cannot be::

      <!-- doc-test: flags-only (needs a GGUF) -->

  Blocks that need a model, an endpoint, a GPU, the hub or minutes of work carry that marker and are
  flag-checked only; everything else must run, quickly, on the shipped files alone.
* Relative links, and their ``#anchors`` into Markdown files, resolve.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
SHELL = {"bash", "sh", "shell"}
MARKER = re.compile(r"<!--\s*doc-test:\s*flags-only\s*\((?P<why>[^)]+)\)\s*-->")
ANY_MARKER = re.compile(r"<!--\s*doc-test\b")
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>.*)$")
SEPARATORS = {"|", "||", "&&", ";", "&"}
#: What the scratch folder of a run links in from the repository: the shipped files a reader has.
SHIPPED = ("plug_lite", "configs", "notebooks", "benchmarks")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, counted from 1
    lang: str
    text: str
    flags_only: str | None  # the reason, when marked

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "PLUG_LITE_JUDGE_", "HF_TOKEN"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONIOENCODING="utf-8")
    return env


def read_blocks(path: Path, text: str | None = None) -> tuple[list[Block], list[tuple[int, str]]]:
    """The fenced blocks of a Markdown page, and its prose lines (number, text) outside them."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks, prose, i = [], [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, info = m["fence"], m["info"].strip()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        before = lines[k].strip() if k >= 0 else ""
        mark = MARKER.fullmatch(before)
        assert mark or not ANY_MARKER.match(before), f"{path.name}:{k + 1}: malformed doc-test marker {before!r}"
        blocks.append(Block(path, i + 1, (info.split() or [""])[0].lower(), "\n".join(lines[i + 1:j]),
                            mark["why"].strip() if mark else None))
        i = j + 1
    return blocks, prose


def command_lines(text: str) -> list[str]:
    """Shell lines with backslash continuations joined and here-document bodies left out."""
    out, buf, heredoc = [], "", None
    for line in text.splitlines():
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        full, buf = buf + line, ""
        m = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", full)
        heredoc = m.group(1) if m else None
        out.append(full)
    return out


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def plug_commands(line: str) -> list[tuple[list[str], list[str]]]:
    """(the interpreter arguments that reach the command, its arguments) for each plug_lite command
    of a shell line: ``plug-lite data build --x`` -> (["-m", "plug_lite"], ["data", "build", "--x"])."""
    toks, segments, seg = _tokens(line), [], []
    for t in toks:
        if t in SEPARATORS:
            segments.append(seg)
            seg = []
        else:
            seg.append(t)
    segments.append(seg)
    found = []
    for seg in segments:
        while seg and re.fullmatch(r"[A-Za-z_]\w*=.*", seg[0]):
            seg = seg[1:]
        if not seg:
            continue
        if seg[0] == "plug-lite":
            found.append((["-m", "plug_lite"], seg[1:]))
        elif seg[0] == "make":
            for t in seg[1:]:
                if t.startswith("DEMO_ARGS="):
                    found.append((["-m", "plug_lite"], ["demo", *shlex.split(t[len("DEMO_ARGS="):])]))
        elif "-m" in seg[:-1]:
            module = seg[seg.index("-m") + 1]
            if re.fullmatch(r"plug_lite(\.[a-z_]\w*)*", module):  # not a placeholder (plug_lite.<verb>)
                found.append((["-m", module], seg[seg.index("-m") + 2:]))
    return found


@lru_cache(maxsize=None)
def help_text(prefix: tuple[str, ...]) -> str:
    r = subprocess.run([sys.executable, *prefix, "--help"], capture_output=True, text=True, env=_env(),
                       cwd=REPO, timeout=120)
    assert r.returncode == 0, f"`python {' '.join(prefix)} --help` failed ({r.returncode}): {r.stderr[-800:]}"
    return r.stdout


def flags_of(help_: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[A-Za-z0-9][\w-]*", help_))


def flag_problems(prefix: list[str], argv: list[str]) -> list[str]:
    """The flags of one command that its ``--help`` does not list (the verb and any subcommand are
    taken from ``argv``), or why the command cannot be checked."""
    prefix, argv = list(prefix), list(argv)
    if prefix == ["-m", "plug_lite"] and argv and not argv[0].startswith("-"):
        if not re.fullmatch(r"[a-z][\w-]*", argv[0]):
            return []  # a placeholder such as <verb>
        prefix.append(argv.pop(0))
    help_ = help_text(tuple(prefix))
    sub = re.search(r"^positional arguments:\n\s+\{([\w,-]+)\}", help_, re.M)
    if sub and argv and argv[0] in sub.group(1).split(","):
        prefix.append(argv.pop(0))
        help_ = help_text(tuple(prefix))
    known = flags_of(help_)
    return [f"{flag} is not a flag of `{' '.join(['python', *prefix])}`"
            for flag in (a.split("=", 1)[0] for a in argv if a.startswith("--") and len(a) > 2)
            if flag not in known]


INLINE_COMMAND = re.compile(r"`((?:plug-lite|python -m plug_lite|accelerate launch|torchrun)\b[^`]*)`")
INLINE_FLAGS = re.compile(r"`(--[A-Za-z0-9][^`]*)`")


def inline_spans(prose: list[tuple[int, str]], pattern: re.Pattern) -> list[tuple[int, str]]:
    """(line number, text) of the inline code spans a pattern matches, spans wrapped over lines included."""
    text, starts = "", []
    for number, line in prose:
        starts.append((len(text), number))
        text += line + "\n"
    out = []
    for m in pattern.finditer(text):
        number = max(n for offset, n in starts if offset <= m.start())
        out.append((number, " ".join(m.group(1).split())))
    return out


def page_problems(path: Path, text: str | None = None) -> list[str]:
    """Every flag a page names that the command it names does not have."""
    blocks, prose = read_blocks(path, text)
    problems = []
    for b in blocks:
        if b.lang in SHELL:
            for line in command_lines(b.text):
                for prefix, argv in plug_commands(line):
                    problems += [f"{b.where}: {p}" for p in flag_problems(prefix, argv)]
    for number, span in inline_spans(prose, INLINE_COMMAND):
        for prefix, argv in plug_commands(span):
            problems += [f"{path.name}:{number}: {p}" for p in flag_problems(prefix, argv)]
    for number, span in inline_spans(prose, INLINE_FLAGS):
        for flag in re.findall(r"--[A-Za-z0-9][\w-]*\*?", span):
            if flag.endswith("*"):  # a family: --translator-*
                if not any(f.startswith(flag[:-1]) for f in all_flags()):
                    problems.append(f"{path.name}:{number}: no plug_lite flag is a {flag}")
            elif flag not in all_flags():
                problems.append(f"{path.name}:{number}: {flag} is not a flag of any plug_lite command")
    return problems


@lru_cache(maxsize=None)
def all_flags() -> frozenset[str]:
    """The flags of every plug_lite command (every verb, ``data build``, the module-only commands)."""
    from plug_lite.cli import VERBS

    prefixes = [("-m", "plug_lite", v) for v in VERBS] + [("-m", "plug_lite", "data", "build"),
                                                          ("-m", "plug_lite.evalsets"), ("-m", "plug_lite.gemma")]
    with ThreadPoolExecutor(4) as pool:
        helps = list(pool.map(help_text, prefixes))
    return frozenset(set().union(*map(flags_of, helps)))


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_flag_a_page_names_exists(path):
    problems = page_problems(path)
    assert not problems, "\n".join(problems)


def test_config_headers_name_real_flags():
    problems = []
    for path in CONFIGS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = re.search(r"plug-lite |accelerate |torchrun |python -m plug_lite", line) if line.startswith("#") else None
            if m:
                for prefix, argv in plug_commands(line[m.start():]):
                    problems += [f"{path.name}:{number}: {p}" for p in flag_problems(prefix, argv)]
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_flag_that_does_not_exist():
    page = """\
Build rows:

```bash
plug-lite data build --target zh --source sample --out rows.jsonl --no-such-flag 3
echo hi | plug-lite chat model.gguf --json --temprature 0.5
accelerate launch --multi_gpu -m plug_lite.train --config c.yaml --learning-rate 1e-4
```

Or `plug-lite export runs/x
--quantize Q8_0`; retries: `--max-retrys`.
"""
    problems = page_problems(REPO / "docs" / "planted.md", page)
    assert any("--no-such-flag is not a flag of `python -m plug_lite data build`" in p for p in problems), problems
    assert any("--temprature is not a flag of `python -m plug_lite chat`" in p for p in problems), problems
    assert any("--learning-rate is not a flag of `python -m plug_lite.train`" in p for p in problems), problems
    assert any("--quantize is not a flag of `python -m plug_lite export`" in p for p in problems), problems
    assert any("--max-retrys is not a flag of any plug_lite command" in p for p in problems), problems
    # the real flags on the same lines pass
    assert not any(f in p for p in problems for f in ("--target ", "--json ", "--config ", "--multi_gpu"))
    assert len(problems) == 5, problems


def _runnable(path: Path) -> list[Block]:
    return [b for b in read_blocks(path)[0] if b.lang in SHELL and b.flags_only is None]


@pytest.mark.parametrize("path", [p for p in PAGES if _runnable(p)], ids=lambda p: p.name)
def test_shell_blocks_run_as_written(path, tmp_path):
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    work.mkdir()
    for name, line in (("plug-lite", f'exec "{sys.executable}" -m plug_lite "$@"'),
                       ("python", f'exec "{sys.executable}" "$@"'), ("python3", f'exec "{sys.executable}" "$@"')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{line}\n")
        (bin_dir / name).chmod(0o755)
    for name in SHIPPED:
        (work / name).symlink_to(REPO / name)
    env = _env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    for b in _runnable(path):
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", b.text], cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, (f"{b.where}: exit {r.returncode}\n{b.text}\n--- stdout\n{r.stdout[-1500:]}"
                                   f"\n--- stderr\n{r.stderr[-1500:]}")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in read_blocks(path)[1]:
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = _slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return frozenset(out)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_links_resolve(path):
    problems = []
    for number, line in read_blocks(path)[1]:
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                problems.append(f"{path.name}:{number}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{path.name}:{number}: {target}: no heading with that anchor")
    assert not problems, "\n".join(problems)
