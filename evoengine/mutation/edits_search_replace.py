"""SEARCH/REPLACE blocks: reading them out of a reply and finding their lines in a program.

This module holds the line-level machinery; ``evoengine.mutation.edits`` turns it into
``EditResult`` outcomes. All functions work on lists of lines that keep their ``\\n``
(``split_lines``), so joining the lines gives the text back exactly.

Matching is exact first. Only when no exact occurrence exists is a tolerant match tried:
lines are compared without trailing whitespace, with runs of inner whitespace collapsed,
tabs counted as 4 columns, blank lines skipped on both sides, and indentation compared
relative to the first line, so that a uniform offset (the model quoted at 0 or 8 columns
what the program has at 4) still matches. The offset is reported so that the caller can
shift the replacement by it.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher

# Splits on "\n" only, keeping it, so that "".join(split_lines(text)) == text.
from evoengine.mutation.evolve_block import _lines_keepends as split_lines

TAB_WIDTH = 4

_TOKEN = re.compile(r"\w+|[^\w\s]")
_CANDIDATES = 8  # windows scored with difflib by nearest_window
_DIFFLIB_MAX_TOKENS = 600  # about 40 lines of code

_SEARCH_LINE = re.compile(r"^[ \t]*<{5,9}[ \t]*SEARCH[ \t]*$")
_DIVIDER_LINE = re.compile(r"^[ \t]*={5,9}[ \t]*$")
_REPLACE_LINE = re.compile(r"^[ \t]*>{5,9}[ \t]*REPLACE[ \t]*$")


class EditFormatError(ValueError):
    """A reply uses SEARCH/REPLACE markers but their structure is broken.

    The message is one line, says which block (1-based) and which reply line, and is
    meant to go back to the model as is.
    """


@dataclass(frozen=True)
class SearchReplace:
    """One block: ``search`` is replaced by ``replace``.

    Both are whole lines, each ending with ``\\n`` (``replace`` may be empty: a deletion).
    """

    search: str
    replace: str


def parse_search_replace(reply: str) -> list[SearchReplace]:
    """The SEARCH/REPLACE blocks of ``reply``, in order; ``[]`` when it has none.

    Prose and ``` fence lines around the blocks are ignored. Marker lines may be indented
    and use 5 to 9 marker characters. A ``=======`` line outside a block is prose (a
    Markdown heading underline). Raises ``EditFormatError`` for a block that is not
    closed, markers out of order, or an empty SEARCH section.
    """
    blocks: list[SearchReplace] = []
    state = "outside"
    search: list[str] = []
    replace: list[str] = []
    opened_at = 0
    for number, line in enumerate(reply.replace("\r\n", "\n").split("\n"), start=1):
        where = f"block {len(blocks) + 1} (opened on reply line {opened_at})"
        if state == "outside":
            if _SEARCH_LINE.match(line):
                state, search, opened_at = "search", [], number
            elif _REPLACE_LINE.match(line):
                raise EditFormatError(
                    f"reply line {number}: '>>>>>>> REPLACE' without a '<<<<<<< SEARCH' "
                    "line before it")
        elif state == "search":
            if _DIVIDER_LINE.match(line):
                state, replace = "replace", []
            elif _SEARCH_LINE.match(line) or _REPLACE_LINE.match(line):
                raise EditFormatError(
                    f"{where}: reply line {number} is a marker, but the SEARCH section "
                    "must end with a '=======' line first")
            else:
                search.append(line)
        elif _REPLACE_LINE.match(line):
            if not any(text.strip() for text in search):
                raise EditFormatError(
                    f"{where}: the SEARCH section is empty; copy the lines to change "
                    "from the program")
            blocks.append(SearchReplace(_join(search), _join(replace)))
            state = "outside"
        elif _SEARCH_LINE.match(line) or _DIVIDER_LINE.match(line):
            raise EditFormatError(
                f"{where}: reply line {number} is a marker, but the REPLACE section "
                "must end with a '>>>>>>> REPLACE' line first")
        else:
            replace.append(line)
    if state != "outside":
        missing = "=======" if state == "search" else ">>>>>>> REPLACE"
        raise EditFormatError(
            f"block {len(blocks) + 1} (opened on reply line {opened_at}) is not closed: "
            f"the reply ends before its '{missing}' line")
    return blocks


def _join(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


@dataclass(frozen=True)
class LineMatch:
    """Program lines ``start:stop`` (0-based, in the list searched) match a SEARCH text.

    ``exact`` is False for a tolerant match; then ``offset`` is the number of columns to
    add to the replacement's indentation (negative: remove), and the matched region runs
    from the first to the last non-blank matched line.
    """

    start: int
    stop: int
    exact: bool
    offset: int = 0


def _indent_columns(line: str) -> int:
    stripped = line.lstrip(" \t")
    return len(line[: len(line) - len(stripped)].expandtabs(TAB_WIDTH))


def _shape(line: str) -> tuple[int, str]:
    """(indentation in columns, content with whitespace runs collapsed) of a line."""
    return _indent_columns(line), " ".join(line.split())


def find_matches(lines: list[str], search: str) -> list[LineMatch]:
    """Every place in ``lines`` where ``search`` matches: the exact ones if there are
    any, else the tolerant ones (see the module docstring). Ordered by start line."""
    wanted = split_lines(search)
    size = len(wanted)
    exact = [LineMatch(i, i + size, True) for i in range(len(lines) - size + 1)
             if not wanted or (lines[i] == wanted[0] and lines[i : i + size] == wanted)]
    if exact:
        return exact
    shapes = [_shape(line) for line in wanted if line.strip()]
    if not shapes:
        return []
    tolerant = []
    for start, line in enumerate(lines):
        if not line.strip():
            continue
        matched = _match_from(lines, start, shapes)
        if matched is not None:
            tolerant.append(matched)
    return tolerant


def _match_from(lines: list[str], start: int, shapes: list[tuple[int, str]]) -> LineMatch | None:
    offset: int | None = None
    index = start
    for indent, content in shapes:
        while index < len(lines) and not lines[index].strip():
            index += 1
        if index == len(lines):
            return None
        have_indent, have_content = _shape(lines[index])
        if have_content != content:
            return None
        if offset is None:
            offset = have_indent - indent
        elif have_indent - indent != offset:
            return None
        index += 1
    return LineMatch(start, index, False, offset or 0)


def reindent(text: str, offset: int, use_tabs: bool, newline: str = "\n") -> str:
    """Shift every non-blank line of ``text`` by ``offset`` columns, writing the indent
    with tabs (``TAB_WIDTH`` columns each) or spaces; blank lines become empty."""
    out = []
    for line in split_lines(text):
        body = line.rstrip("\r\n")
        if not body.strip():
            out.append(newline)
            continue
        columns = max(_indent_columns(body) + offset, 0)
        if use_tabs:
            indent = "\t" * (columns // TAB_WIDTH) + " " * (columns % TAB_WIDTH)
        else:
            indent = " " * columns
        out.append(indent + body.lstrip(" \t") + newline)
    return "".join(out)


def nearest_window(lines: list[str], search: str) -> tuple[int, int, float] | None:
    """The window of ``lines`` (as many lines as ``search`` has) most similar to it:
    ``(start, stop, similarity)``, or None when ``lines`` is empty. Ties go to the
    earliest window.

    Lines are compared as tokens (identifiers, numbers, single punctuation characters;
    whitespace ignored). A sliding count ranks every window, in linear time, by the
    tokens it shares with ``search``; the best ``_CANDIDATES`` are then scored with
    difflib's ratio. difflib's cost grows with the square of the window, so a search
    of more than ``_DIFFLIB_MAX_TOKENS`` tokens is scored by the shared-token count
    alone (Dice coefficient: 2 * shared / (tokens in search + tokens in window)).
    """
    wanted = split_lines(search)
    size = min(len(wanted), len(lines))
    if size == 0:
        return None
    wanted_tokens = [token for line in wanted for token in _TOKEN.findall(line)]
    target = Counter(wanted_tokens)
    tokens = [_TOKEN.findall(line) for line in lines]
    window: Counter[str] = Counter()
    shared = length = 0
    ranked: list[tuple[float, int]] = []  # (-Dice coefficient, start)
    for index, line_tokens in enumerate(tokens):
        for token in line_tokens:
            shared += window[token] < target[token]
            window[token] += 1
        length += len(line_tokens)
        if index >= size:
            for token in tokens[index - size]:
                window[token] -= 1
                shared -= window[token] < target[token]
            length -= len(tokens[index - size])
        if index >= size - 1:
            total = len(wanted_tokens) + length
            ranked.append((-2 * shared / total if total else -1.0, index - size + 1))
    if len(wanted_tokens) > _DIFFLIB_MAX_TOKENS:
        score, start = min(ranked)
        return start, start + size, -score
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(wanted_tokens)
    best: tuple[int, int, float] | None = None
    for start in sorted(start for _, start in heapq.nsmallest(_CANDIDATES, ranked)):
        matcher.set_seq1([token for line in tokens[start : start + size] for token in line])
        if best is not None and (matcher.real_quick_ratio() <= best[2]
                                 or matcher.quick_ratio() <= best[2]):
            continue
        ratio = matcher.ratio()
        if best is None or ratio > best[2]:
            best = (start, start + size, ratio)
    return best
