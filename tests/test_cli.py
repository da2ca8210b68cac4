"""The command lines built from typed mains (plug_lite.cli): flags from a signature, a dataclass
parameter as its fields' flags, and the flags of the verbs that take grouped settings, which are
those they had before the settings were grouped."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from plug_lite import chat, cli, generate, judge, llm, translate
from plug_lite.engine import EngineOptions

REPO = Path(__file__).resolve().parents[1]


def _verb_main(a: int, b: str = "x", *, out: str, flag: bool = True, quants: list[str] = ("Q4",),
               target: str | None = None, n: float = 0.5) -> dict:
    """A verb.

    Args:
        a: the first
        b: the second, on
            two lines
        out: where it goes
        flag: a switch
        quants: repeatable
        target: the language
        n: a number
    """
    return dict(a=a, b=b, out=out, flag=flag, quants=quants, target=target, n=n)


def test_flags_from_a_typed_main():
    ap = cli.parser_for(_verb_main, prog="t", positional=("a", "b"), names={"target": ("--target", "--lang")},
                        parser=__import__("argparse").ArgumentParser(prog="t"))
    text = ap.format_help()
    assert "the second, on two lines" in text and "--flag, --no-flag" in text and "--target TARGET, --lang TARGET" in text
    assert "a number (default: 0.5)" in text
    got = cli.parse(ap, _verb_main, ["3", "--out", "o", "--no-flag", "--lang", "zh", "--quants", "Q8", "--quants", "F16"])
    assert _verb_main(**got) == dict(a=3, b="x", out="o", flag=False, quants=["Q8", "F16"], target="zh", n=0.5)
    got = cli.parse(ap, _verb_main, ["3", "y", "--out", "o"])
    assert _verb_main(**got)["quants"] == ("Q4",) and _verb_main(**got)["b"] == "y"  # an unset list keeps the default
    with pytest.raises(SystemExit):
        ap.parse_args(["3"])  # --out is required: it has no default


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_python_m_plug_lite_lists_the_verbs_and_each_help_comes_from_main():
    r = _run("-m", "plug_lite", "--help")
    assert r.returncode == 0 and all(verb in r.stdout for verb in cli.VERBS)
    assert _run("-m", "plug_lite", "nope").returncode == 2
    for verb, flag in (("generate", "--target TARGET, --lang TARGET"), ("judge", "--report, --no-report"),
                       ("chat", "--json, --no-json"), ("export", "--verify, --no-verify"),
                       ("report", "--chart, --no-chart"), ("demo", "--target TARGET, --lang TARGET"),
                       ("translate", "--dry-run"), ("extract", "--format {plug,mono,pivot_only}"),
                       ("share", "--push USER/REPO"), ("train", "--think, --no-think")):
        r = _run("-m", "plug_lite", verb, "--help")
        assert r.returncode == 0 and flag in r.stdout, (verb, r.stdout + r.stderr)
    r = _run("-m", "plug_lite", "data", "build", "--help")
    assert r.returncode == 0 and "--system, --no-system" in r.stdout


#: Per verb, a flag given a value of the wrong type (the unknown flag is tried on every verb).
_BAD_VALUE = {"train": ["--max-steps", "many"], "chat": ["m.gguf", "--threads", "many"],
              "serve": ["m.gguf", "--port", "many"], "generate": ["--limit", "many"],
              "data": ["build", "--target", "zh", "--out", "o", "--max-samples", "many"]}


@pytest.mark.parametrize("verb", sorted(cli.VERBS))
def test_a_bad_flag_is_one_line_and_status_2(verb, capsys):
    """An unknown flag or a flag's bad value: one line naming it, no 20-line usage block, status 2."""
    # argparse names a missing required argument before an unknown flag
    tries = [([verb, "--no-such-flag"], re.compile(r"--no-such-flag|arguments are required: -*\w"))]
    if verb in _BAD_VALUE:
        tries.append(([verb, *_BAD_VALUE[verb]], re.compile(r"argument --[a-z-]+: invalid \w+ value: 'many'")))
    for argv, named in tries:
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "--help lists the options" in err, (argv, err)
        assert named.search(err), (argv, err)


@dataclass(frozen=True)
class _Endpoint:
    url: str | None = field(default=None, metadata={"help": "where it is"})
    retries: int = 5
    secret: str | None = None


def _grouped_main(*, out: str, remote: _Endpoint = _Endpoint(retries=3), other: _Endpoint = _Endpoint()) -> dict:
    """A verb with grouped settings.

    Args:
        out: where it goes
        remote: the remote end
        remote.retries: how often to retry the remote
    """
    return dict(out=out, remote=remote, other=other)


def test_a_dataclass_parameter_becomes_its_fields_flags():
    ap = cli.parser_for(_grouped_main, prog="t", parser=argparse.ArgumentParser(prog="t"),
                        names={"other.url": "--other-url"}, exclude=("remote.secret", "other.retries", "other.secret"))
    text = ap.format_help()
    assert "--url URL" in text and "where it is" in text and "--other-url OTHER_URL" in text
    assert "how often to retry the remote (default: 3)" in text  # help from main's Args, default from its default
    flags = {f for a in ap._actions for f in a.option_strings}
    assert flags == {"-h", "--help", "--out", "--url", "--retries", "--other-url"}  # secret and other.retries left out
    got = cli.parse(ap, _grouped_main, ["--out", "o", "--url", "http://x", "--other-url", "http://y"])
    assert _grouped_main(**got) == dict(out="o", remote=_Endpoint("http://x", 3), other=_Endpoint("http://y"))
    got = cli.parse(ap, _grouped_main, ["--out", "o", "--retries", "0"])
    assert got["remote"] == _Endpoint(None, 0) and got["other"] == _Endpoint()


#: The flags of the verbs that now take grouped settings, as they were when they took one
#: parameter per setting (captured from `plug-lite <verb> --help` before the change).
FLAGS_BEFORE = {
    "generate": ["--api-key", "--backend", "--base", "--base-url", "--ctx", "--eval-set", "--format", "--generator",
                 "--gpu-layers", "--lang", "--limit", "--lora", "--max-new-tokens", "--max-retries", "--model-name",
                 "--no-progress", "--out", "--pivot", "--progress", "--seed", "--system", "--target", "--temperature",
                 "--threads", "--translate-test", "--translator-api-key", "--translator-base-url", "--translator-model"],
    "judge": ["--api-key", "--base-url", "--bootstrap", "--cache", "--dry-run", "--eval-set", "--intersect",
              "--judge-prompts", "--lang", "--limit", "--llm-extract", "--max-retries", "--max-tokens", "--mode",
              "--model", "--no-dry-run", "--no-intersect", "--no-llm-extract", "--no-report", "--out", "--parallel",
              "--price-in", "--price-out", "--prices", "--prompt-name", "--report", "--seed", "--target", "--timeout"],
    "translate": ["--api-key", "--base-url", "--cache", "--dry-run", "--limit", "--max-retries", "--max-tokens",
                  "--model", "--no-dry-run", "--out", "--parallel", "--price-in", "--price-out", "--prices",
                  "--rejects", "--source", "--target", "--timeout"],
    "chat": ["--ctx", "--format", "--gpu-layers", "--json", "--lora", "--max-new-tokens", "--no-json",
             "--no-show-pivot", "--no-think", "--pivot", "--prompt", "--show-pivot", "--system", "--target",
             "--temperature", "--think", "--threads"],
}
#: ... and those added since: llama.cpp's own log on request, the batch engines
#: (:class:`plug_lite.llm_batch.BatchOptions`, itself a dataclass parameter).
BATCH_FLAGS = ["--write-requests", "--read-results", "--batch", "--no-batch", "--batch-wait", "--no-batch-wait",
               "--batch-poll", "--batch-url"]
PROMPTED_FLAGS = ["--prompted", "--no-prompted", "--shots", "--examples"]  # prompted PLUG (plug_lite.prompted)
RESUME_FLAGS = ["--force-resume", "--no-force-resume"]  # a resume with other settings
ADDED = {"generate": ["--verbose", "--no-verbose", *BATCH_FLAGS, *PROMPTED_FLAGS, *RESUME_FLAGS],
         "chat": ["--verbose", "--no-verbose", *PROMPTED_FLAGS],
         "judge": [*BATCH_FLAGS, "--judges", "--judge-url", "--judge-key-env"], "translate": BATCH_FLAGS}


def _parser(module, monkeypatch) -> argparse.ArgumentParser:
    """The parser a verb's cli() builds (caught when it parses)."""
    seen = []

    def grab(self, args=None, namespace=None):
        seen.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(SystemExit):
        module.cli(["x"])
    return seen[0]


@pytest.mark.parametrize("verb", sorted(FLAGS_BEFORE))
def test_grouped_settings_keep_every_flag_name(verb, monkeypatch):
    ap = _parser({"generate": generate, "judge": judge, "translate": translate, "chat": chat}[verb], monkeypatch)
    flags = sorted(f for a in ap._actions for f in a.option_strings if f.startswith("--") and f != "--help")
    assert flags == sorted(FLAGS_BEFORE[verb] + ADDED.get(verb, []))


def test_grouped_settings_reach_main_whole(monkeypatch):
    ap = cli.parser_for(judge.main, prog="j", exclude=("judge.temperature",), positional=("a", "b"))
    got = cli.parse(ap, judge.main, ["a.jsonl", "--out", "o", "--model", "m", "--base-url", "http://h/v1",
                                     "--api-key", "sk-secret", "--timeout", "5", "--max-retries", "0"])
    assert got["judge"] == llm.LLMSettings(model="m", base_url="http://h/v1", api_key="sk-secret", timeout=5.0,
                                          max_retries=0)
    assert "sk-secret" not in repr(got["judge"])  # the key stays out of every repr
    ap = cli.parser_for(translate.main, prog="t", exclude=("translator.temperature",), positional=("input",))
    assert cli.parse(ap, translate.main, ["in.jsonl", "--out", "o", "--target", "zh"])["translator"].max_tokens == 2048
    ap = _parser(generate, monkeypatch)  # the parser generate.cli builds (names, exclusions)
    monkeypatch.undo()  # argparse parses again
    got = cli.parse(ap, generate.main, ["m.gguf", "--eval-set", "e", "--out", "o", "--model-name", "n", "--base-url",
                                        "http://h/v1", "--max-retries", "2", "--translator-model", "t", "--ctx", "512",
                                        "--lora", "a.gguf", "--verbose"])
    assert got["endpoint"] == llm.LLMSettings(model="n", base_url="http://h/v1", max_retries=2, timeout=600.0)
    assert got["translator"] == llm.LLMSettings(model="t")
    assert got["options"] == EngineOptions(ctx=512, lora="a.gguf", verbose=True)
    got = cli.parse(ap, generate.main, ["m.gguf", "--eval-set", "e", "--out", "o"])
    assert got["endpoint"] == generate.ENDPOINT and got["options"] == EngineOptions()
