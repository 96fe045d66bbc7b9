"""One helper for the benchmark scripts: replace (or add) their own section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def write_section(key: str, body: str) -> Path:
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    section = f"{start}\n{body.rstrip()}\n{end}"
    text = PATH.read_text() if PATH.exists() else "# douane benchmarks\n"
    if start in text and end in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    PATH.write_text(text)
    return PATH
