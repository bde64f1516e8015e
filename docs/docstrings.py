"""Reads keras-distill's docstrings as their authors wrote them: Keras style.

The docstrings follow Keras' own source: Google-style sections (napoleon parses them), Markdown
backticks for code (`x`, not reST's ``x``) and an `Example:` line followed directly by doctest
lines at the same indentation. Sphinx would read the backticks as reST interpreted text and glue
the doctest lines to the `Example:` paragraph; this hook (after napoleon) turns the `Example:`
line into a rubric with the doctest as its own block and the backticks into inline code.
"""

from __future__ import annotations

import re

EXAMPLE_HEADING = re.compile(r"^(\s*)(Examples?):\s*$")
MARKDOWN_CODE = re.compile(r"(?<![`\\:])`([^`\n]+)`(?![`_])")
LONE_BACKTICK = re.compile(r"(?<![`\\:])`(?![`_])")
DOCTEST = (">>>", "...")


def inline_code(line: str) -> str:
    r"""A line with Markdown `code` spans as reST ``code`` (joined to a following word).

    Args:
        line: One line of prose from a docstring.

    Returns:
        The line with each single-backtick span doubled, followed by an escaped space
        where a letter follows directly (`Sample`s).

    Example:
    >>> inline_code("`Sample`s and `x`.")
    '``Sample``\\ s and ``x``.'
    """

    def literal(match: re.Match) -> str:
        end = match.end()
        joined = end < len(line) and (line[end].isalnum())
        return f"``{match.group(1)}``" + ("\\ " if joined else "")

    return MARKDOWN_CODE.sub(literal, line)


def keras_style(lines: list[str]) -> list[str]:
    """A docstring's lines (after napoleon) as reST that renders without warnings.

    Args:
        lines: The docstring's lines, as autodoc passes them.

    Returns:
        The new lines: `Example:` lines followed by a doctest become a rubric, doctest
        lines are separated from prose by a blank line and kept verbatim, prose gets
        inline code.

    Example:
    >>> keras_style(["Example:", ">>> 1 + 1", "2"])
    ['.. rubric:: Example', '', '>>> 1 + 1', '2']
    >>> keras_style(["a `b", "c", "d` `e` f"])
    ['a ``b', 'c', 'd`` ``e`` f']
    """
    result: list[str] = []
    in_doctest = False
    span_open = False  # a code span that started on an earlier line
    for index, line in enumerate(lines):
        stripped = line.strip()
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        heading = EXAMPLE_HEADING.match(line)
        if heading and following.startswith(">>>"):
            result += [f"{heading.group(1)}.. rubric:: {heading.group(2)}", ""]
            continue
        if stripped.startswith(">>>") and not in_doctest:
            if result and result[-1].strip():
                result.append("")
            in_doctest = True
        elif not stripped:
            in_doctest = False
        if in_doctest or stripped.startswith(DOCTEST):
            result.append(line)
            continue
        if span_open and not LONE_BACKTICK.search(line):
            result.append(line)  # the span goes on
            continue
        if span_open:
            line = LONE_BACKTICK.sub("``", line, count=1)
        prose = inline_code(line)
        span_open = bool(LONE_BACKTICK.search(prose))
        result.append(LONE_BACKTICK.sub("``", prose))
    return result


def process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """The `autodoc-process-docstring` handler: rewrites `lines` in place."""
    lines[:] = keras_style(lines)
