"""The EVOLVE-BLOCK: the one region of a candidate program that the search may change.

A program marks the region with a line ``# EVOLVE-BLOCK-START`` and a later line
``# EVOLVE-BLOCK-END`` (each may be indented and may carry trailing text, e.g.
``# EVOLVE-BLOCK-END  (do not edit below)``). Everything else -- imports the harness
relies on, helper code, the entry point's callers -- must stay byte-identical, so that
a child can only be better or worse at the task, never a different task.

Splitting is line-based and exact: ``prefix + body + suffix == code`` always holds,
whatever the line endings, so reassembling a child never disturbs the parent's bytes.
A marker is recognised only as a whole comment line; text that merely mentions the
marker (inside a string, after code) is not one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

START_MARKER = "# EVOLVE-BLOCK-START"
END_MARKER = "# EVOLVE-BLOCK-END"

# A whole-line comment whose first word is the marker; anything may follow it.
_START_LINE = re.compile(r"^[ \t]*#[ \t]*EVOLVE-BLOCK-START(?![\w-])")
_END_LINE = re.compile(r"^[ \t]*#[ \t]*EVOLVE-BLOCK-END(?![\w-])")

_MAX_QUOTED_LINE = 80


class EvolveBlockError(ValueError):
    """The EVOLVE-BLOCK markers are missing, duplicated or out of order, or an edit
    changed code outside the block. The message is one line and says what to fix."""


@dataclass(frozen=True)
class EvolveBlock:
    """A program cut into three parts.

    ``prefix`` ends with the start-marker line (newline included), ``suffix`` begins
    with the end-marker line, and ``body`` is everything in between (possibly empty).
    """

    prefix: str
    body: str
    suffix: str

    @property
    def body_first_line(self) -> int:
        """The 1-based line number in the whole program of the body's first line."""
        return self.prefix.count("\n") + 1

    def with_body(self, new_body: str) -> str:
        """The whole program with ``new_body`` in place of the block's body.

        A missing final newline is added to a non-empty body, so the end marker always
        stays on a line of its own (otherwise it would become trailing text of code).
        """
        if new_body and not new_body.endswith("\n"):
            new_body += "\n"
        return self.prefix + new_body + self.suffix


def _lines_keepends(code: str) -> list[str]:
    """Split on ``\\n`` only, keeping it, so that ``"".join(lines) == code`` exactly.

    ``str.splitlines`` is not used because it also splits on form feeds and Unicode
    separators, which Python source treats as ordinary characters inside a line.
    """
    pieces = code.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def split_evolve_block(code: str) -> EvolveBlock:
    """Cut ``code`` at its EVOLVE-BLOCK markers.

    Raises ``EvolveBlockError`` unless there is exactly one start marker line followed
    later by exactly one end marker line. A program without markers raises too: whether
    such a program is evolvable as a whole is the caller's decision, not this parser's.
    """
    lines = _lines_keepends(code)
    starts = [i for i, line in enumerate(lines) if _START_LINE.match(line)]
    ends = [i for i, line in enumerate(lines) if _END_LINE.match(line)]
    if not starts and not ends:
        raise EvolveBlockError(
            f"no EVOLVE-BLOCK markers: put a line '{START_MARKER}' above and a line "
            f"'{END_MARKER}' below the code the search may change")
    if not starts:
        raise EvolveBlockError(
            f"'{END_MARKER}' on line {ends[0] + 1} has no '{START_MARKER}' line before it")
    if not ends:
        raise EvolveBlockError(
            f"'{START_MARKER}' on line {starts[0] + 1} has no '{END_MARKER}' line after it")
    if len(starts) > 1:
        raise EvolveBlockError(
            f"'{START_MARKER}' appears {len(starts)} times (lines "
            f"{', '.join(str(i + 1) for i in starts)}); keep exactly one")
    if len(ends) > 1:
        raise EvolveBlockError(
            f"'{END_MARKER}' appears {len(ends)} times (lines "
            f"{', '.join(str(i + 1) for i in ends)}); keep exactly one")
    start, end = starts[0], ends[0]
    if end < start:
        raise EvolveBlockError(
            f"'{END_MARKER}' (line {end + 1}) comes before '{START_MARKER}' "
            f"(line {start + 1}); swap them")
    return EvolveBlock(
        prefix="".join(lines[: start + 1]),
        body="".join(lines[start + 1 : end]),
        suffix="".join(lines[end:]),
    )


def _quoted(line: str | None) -> str:
    if line is None:
        return "<no line>"
    text = line.rstrip("\r\n")
    if len(text) > _MAX_QUOTED_LINE:
        text = text[: _MAX_QUOTED_LINE - 3] + "..."
    return repr(text)


def _first_difference(parent_part: str, child_part: str, first_line_number: int) -> str:
    """Describe the first line where two texts differ, numbered as in the parent."""
    parent_lines = _lines_keepends(parent_part)
    child_lines = _lines_keepends(child_part)
    for offset in range(max(len(parent_lines), len(child_lines))):
        before = parent_lines[offset] if offset < len(parent_lines) else None
        after = child_lines[offset] if offset < len(child_lines) else None
        if before != after:
            return f"line {first_line_number + offset}: {_quoted(before)} -> {_quoted(after)}"
    return f"line {first_line_number}: line endings differ"  # unreachable when parts differ


def check_edit_confined(parent_code: str, child_code: str) -> None:
    """Raise ``EvolveBlockError`` unless ``child_code`` differs from ``parent_code``
    only inside the EVOLVE-BLOCK.

    This is the engine's guard that an edit cannot change the task (the harness
    imports, the entry point's signature outside the block, ...). A child whose
    markers are missing or broken fails here too, with the marker problem as message.
    """
    parent = split_evolve_block(parent_code)
    try:
        child = split_evolve_block(child_code)
    except EvolveBlockError as error:
        raise EvolveBlockError(f"edit broke the EVOLVE-BLOCK markers: {error}") from None
    if child.prefix != parent.prefix:
        where = _first_difference(parent.prefix, child.prefix, 1)
        raise EvolveBlockError(f"edit touches code outside the EVOLVE-BLOCK: {where}")
    if child.suffix != parent.suffix:
        suffix_first_line = parent.prefix.count("\n") + parent.body.count("\n") + 1
        where = _first_difference(parent.suffix, child.suffix, suffix_first_line)
        raise EvolveBlockError(f"edit touches code outside the EVOLVE-BLOCK: {where}")
