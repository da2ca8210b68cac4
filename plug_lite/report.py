"""``plug-lite report``: a Markdown + JSON summary of judge results and answer files.

The report itself (tables, chart, offline metrics) is :mod:`plug_lite.reporting`'s; this verb
writes it from the command line. ``plug-lite report --offline FILE`` alone needs no judge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from .cli import FOLDER, run
from .io import UserError
from .reporting import write_report

__all__ = ["main", "cli"]


def main(results: list[str] = (), *, offline: list[str] = (), out: Annotated[str, FOLDER] = "report", target: str | None = None,
         chart: bool = True) -> dict:
    """Write ``out``/report.md, report.json and (pairwise) winrate.png. Returns the JSON summary.

    Args:
        results: judge.json files from plug-lite judge
        offline: answer file for offline metrics (repeatable)
        out: output folder
        target: target language for offline metrics (default: each file's)
        chart: draw the win / tie / loss chart of pairwise results
    """
    if not results and not offline:
        raise UserError("nothing to report: give judge.json files and/or --offline FILE")
    return write_report(results=list(results), offline=list(offline), out=out, target=target, chart=chart)


def cli(argv: list[str] | None = None) -> int:
    def finish(summary: dict, args: dict) -> int:
        print(Path(args.get("out", "report")) / "report.md")
        return 0

    return run(main, argv, prog="plug-lite report", finish=finish, positional=("results",),
               names={"target": ("--target", "--lang")}, extra={"offline": {"metavar": "FILE"}})


if __name__ == "__main__":
    raise SystemExit(cli())
