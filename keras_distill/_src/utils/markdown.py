"""Markdown tables, as every report, summary and benchmark of the package prints them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence], align: str | None = None) -> str:
    """A Markdown table: a header row, an alignment row, then one row per entry.

    Args:
        header: The column names.
        rows: The cells of each row (formatted already, or anything `str` accepts).
        align: One letter per column, `"l"` (left) or `"r"` (right); by
            default the first column is left-aligned and the others right.

    Returns:
        The table's lines joined by newlines.

    Raises:
        ValueError: If `align` or a row does not have one entry per column.

    Example:
    >>> print(table(["model", "accuracy"], [["student", "93.1%"]]))
    | model | accuracy |
    |---|---:|
    | student | 93.1% |
    """
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(
            f"`align` needs one 'l' or 'r' per column ({len(header)}); received {align!r}."
        )
    lines = [_row(header), "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    for cells in rows:
        if len(cells) != len(header):
            raise ValueError(
                f"A row has {len(cells)} cells for {len(header)} columns: {list(cells)!r}."
            )
        lines.append(_row(cells))
    return "\n".join(lines)


def _row(cells: Sequence) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"
