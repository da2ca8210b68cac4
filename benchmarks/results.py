"""Where benchmark scripts put their numbers: a section appended to benchmarks/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmarks\n\nEach section is appended by the script named in its title.\n"


def publish(text: str, *, append: bool = True) -> None:
    """Print ``text`` and, with ``append``, add it to RESULTS.md (created with its header)."""
    print(text)
    if append:
        if not RESULTS.exists():
            RESULTS.write_text(HEADER, encoding="utf-8")
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(text)
