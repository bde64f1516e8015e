"""Helpers shared by the benchmark scripts."""

import pathlib


def write_report(lines: list[str], path: str) -> None:
    """Writes the Markdown lines to `path` (creating its folder) and prints them."""
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
