"""The edit formats of an LLM reply: SEARCH/REPLACE blocks and full rewrites.

Both formats change only the parent's EVOLVE-BLOCK body; the prefix and suffix of the
child are the parent's, byte for byte (checked with ``check_edit_confined``). Each
``apply_*`` function returns an ``EditResult`` whose ``message`` can go back to the
model (for one retry) or into the archive. The parent itself must have valid markers:
``EvolveBlockError`` from ``split_evolve_block`` propagates, as that is the caller's bug.

Decisions, SEARCH/REPLACE (``apply_search_replace``):

* Blocks apply in order, each to the result of the ones before; all or nothing: if a
  block fails, no block is applied and the outcome is that of the failing block.
* A block is searched in the body only, exactly first, then tolerantly (trailing and
  inner whitespace, blank lines, tabs, a uniform indentation offset; see
  ``edits_search_replace``). A tolerant match re-indents the replacement by the same
  offset, in the program's indent style (tabs when the matched lines use tabs) and
  line endings, and drops as many leading/trailing blank lines from the replacement
  as the search had (those were not matched).
* A search text matching several places changes the first one; ``message`` says so
  and lists the line numbers, counted in the program as the earlier blocks left it
  (the outcome stays "applied").
* A block that matches nowhere in the body but does match (overlapping) the prefix,
  the suffix or a marker line is "rejected"; otherwise it is "unmatched" and the
  message shows the most similar window of the parent's body, with line numbers of
  the parent program (the one the model saw), even for a later block.
* Broken marker structure, an empty SEARCH section, or no block at all: "malformed".

Decisions, full rewrite (``apply_full_rewrite``):

* The code is the last closed ``` fence whose info word is empty, ``python``, ``py``
  or ``python3``; but if some such fence contains EVOLVE-BLOCK markers, the last of
  those is taken instead (a short usage example after the program is common).
* With markers, only what lies between them is used; code outside them in the reply
  is ignored, and the message says so when it is not just a copy of the program's.
  Broken markers in the reply: "rejected". Without markers the whole fence is the
  new body. No usable fence, an unclosed last fence (truncated reply?) or an empty
  body: "malformed".
* Whether the child parses is not checked here: a syntax error is the evaluator's to
  report. Only bodies that would break the markers are "rejected".

Both formats: a child identical (as text) to the parent is "noop".
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from evoengine.mutation.edits_search_replace import (
    EditFormatError,
    LineMatch,
    SearchReplace,
    find_matches,
    nearest_window,
    parse_search_replace,
    reindent,
    split_lines,
)
from evoengine.mutation.evolve_block import (
    _END_LINE,
    _START_LINE,
    EvolveBlock,
    EvolveBlockError,
    check_edit_confined,
    split_evolve_block,
)

__all__ = [
    "OUTCOMES", "EditFormatError", "EditResult", "SearchReplace", "apply_full_rewrite",
    "apply_search_replace", "diff_summary", "parse_search_replace",
]

OUTCOMES = ("applied", "noop", "unmatched", "rejected", "malformed")

_MAX_SHOWN_LINES = 30
_MAX_SHOWN_WIDTH = 120
# A reply of thousands of blocks, each matching thousands of lines, once made a 74 MB
# message (stored, and shown to the model): the notes name this many places and keep
# this many notes.
_MAX_PLACES_SHOWN = 5
_MAX_NOTES = 10
_PYTHON_FENCE_WORDS = ("", "python", "py", "python3")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,})[ \t]*([^`\s]*)[^`]*$")


@dataclass(frozen=True)
class EditResult:
    """What applying a reply to a parent gave.

    ``outcome`` is one of ``OUTCOMES``; ``code`` is the child program when "applied",
    else None; ``message`` is one short paragraph for the model or the archive.
    """

    outcome: str
    code: str | None
    message: str

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown edit outcome {self.outcome!r}")
        if (self.code is not None) != (self.outcome == "applied"):
            raise ValueError("EditResult.code is set exactly when the outcome is 'applied'")


def diff_summary(parent: str, child: str) -> str:
    """A unified diff from ``parent`` to ``child`` ('' when they are equal)."""
    def lines(text: str) -> list[str]:
        return [line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                for line in split_lines(text)]
    return "".join(difflib.unified_diff(lines(parent), lines(child), "parent", "child"))


# --------------------------------------------------------------------------- search/replace

def apply_search_replace(code: str, reply: str) -> EditResult:
    """Apply the SEARCH/REPLACE blocks of ``reply`` to ``code``'s EVOLVE-BLOCK body."""
    block = split_evolve_block(code)
    try:
        edits = parse_search_replace(reply)
    except EditFormatError as error:
        return EditResult("malformed", None, f"Malformed SEARCH/REPLACE reply: {error}.")
    if not edits:
        return EditResult("malformed", None,
                          "The reply has no SEARCH/REPLACE block ('<<<<<<< SEARCH', "
                          "'=======', '>>>>>>> REPLACE' lines).")
    lines = split_lines(block.body)
    notes: list[str] = []
    for number, edit in enumerate(edits, start=1):
        matches = find_matches(lines, edit.search)
        if not matches:
            return _failed_block(code, block, edit, number, len(edits))
        match = matches[0]
        if len(matches) > 1:
            where = ", ".join(str(block.body_first_line + m.start)
                              for m in matches[:_MAX_PLACES_SHOWN])
            if len(matches) > _MAX_PLACES_SHOWN:
                where += f", ... {len(matches) - _MAX_PLACES_SHOWN} more"
            notes.append(f"Block {number} matches {len(matches)} places (lines {where}); "
                         "only the first was changed")
        if match.exact:
            replacement = edit.replace
        else:
            replacement = _adapt_replacement(edit, match, lines)
            if match.offset:
                notes.append(f"Block {number} matched after ignoring whitespace; its "
                             f"replacement was re-indented by {match.offset:+d} columns")
            else:
                notes.append(f"Block {number} matched after ignoring whitespace")
        lines[match.start : match.stop] = split_lines(replacement)
    return _finish(code, block, "".join(lines),
                   f"Applied {len(edits)} SEARCH/REPLACE block{'s' * (len(edits) > 1)}",
                   notes, noop="the REPLACE sections reproduce the code they replace")


def _adapt_replacement(edit: SearchReplace, match: LineMatch, lines: list[str]) -> str:
    """The replacement for a tolerant match, in the program's indentation and newlines."""
    search_lines = split_lines(edit.search)
    replace_lines = split_lines(edit.replace)
    for side in (0, -1):  # drop the blank lines at each end the match did not consume
        count = 0
        for line in search_lines[::1 if side == 0 else -1]:
            if line.strip():
                break
            count += 1
        while count and replace_lines and not replace_lines[side].strip():
            replace_lines.pop(side)
            count -= 1
    matched = lines[match.start : match.stop]
    use_tabs = any(line.startswith("\t") for line in matched)
    newline = "\r\n" if matched[0].endswith("\r\n") else "\n"
    return reindent("".join(replace_lines), match.offset, use_tabs, newline)


def _failed_block(code: str, block: EvolveBlock, edit: SearchReplace, number: int,
                  total: int) -> EditResult:
    which = f"SEARCH/REPLACE block {number}" + (f" of {total}" if total > 1 else "")
    skipped = " No block was applied." if total > 1 else ""
    first = block.body_first_line  # 1-based line of the body's first line
    last = first + block.body.count("\n") - 1
    allowed = f"only {_span(first, last)} may change" if last >= first else "it is empty"
    for match in find_matches(split_lines(code), edit.search):
        lo, hi = match.start + 1, match.stop  # 1-based, inclusive
        if lo < first or hi > last:
            return EditResult(
                "rejected", None,
                f"{which} changes {_span(lo, hi)}, outside the EVOLVE-BLOCK ({allowed}); "
                "leave the code outside the block as it is."
                + skipped)
    parent_lines = split_lines(block.body)
    nearest = nearest_window(parent_lines, edit.search)
    if nearest is None:
        hint = "The EVOLVE-BLOCK is empty."
    else:
        start, stop, ratio = nearest
        shown = [f"{first + i:4d} | {_clip(parent_lines[i])}"
                 for i in range(start, min(stop, start + _MAX_SHOWN_LINES))]
        if stop - start > _MAX_SHOWN_LINES:
            shown.append("     | ...")
        hint = (f"Closest match in the program: {_span(first + start, first + stop - 1)} "
                f"(similarity {ratio:.2f}):\n" + "\n".join(shown))
    return EditResult(
        "unmatched", None,
        f"{which} does not match the program: its SEARCH section must copy lines of the "
        f"EVOLVE-BLOCK exactly.{skipped} {hint}")


def _span(first: int, last: int) -> str:
    return f"line {first}" if first == last else f"lines {first}-{last}"


def _clip(line: str) -> str:
    text = line.rstrip("\r\n")
    return text if len(text) <= _MAX_SHOWN_WIDTH else text[: _MAX_SHOWN_WIDTH - 3] + "..."


def _finish(code: str, block: EvolveBlock, body: str, done: str, notes: list[str],
            noop: str) -> EditResult:
    child = block.with_body(body)
    if child == code:
        return EditResult("noop", None, f"The edit leaves the program unchanged: {noop}.")
    try:
        check_edit_confined(code, child)
    except EvolveBlockError as error:
        return EditResult("rejected", None, f"The edit is not allowed: {error}.")
    if len(notes) > _MAX_NOTES:
        notes = [*notes[:_MAX_NOTES], f"{len(notes) - _MAX_NOTES} more notes left out"]
    return EditResult("applied", child, ". ".join([done, *notes]) + ".")


# --------------------------------------------------------------------------- full rewrite

def apply_full_rewrite(code: str, reply: str) -> EditResult:
    """Replace ``code``'s EVOLVE-BLOCK body with the code block of ``reply``."""
    block = split_evolve_block(code)
    fences, unclosed = _python_fences(reply.replace("\r\n", "\n"))
    if unclosed:
        return EditResult("malformed", None,
                          "The reply's last code block is not closed with ``` (was the "
                          "reply cut off?); send the whole program in one closed block.")
    if not fences:
        return EditResult("malformed", None,
                          "The reply has no ```python code block; send the new code of "
                          "the EVOLVE-BLOCK in one.")
    marked = [text for text in fences if _has_marker(text)]
    text = (marked or fences)[-1]
    notes: list[str] = []
    if marked:
        try:
            reply_block = split_evolve_block(text)
        except EvolveBlockError as error:
            return EditResult("rejected", None,
                              f"The code in the reply has broken markers: {error}.")
        body = reply_block.body
        outside = _outside_lines(reply_block)
        if not outside <= _outside_lines(block):
            notes.append("Code outside the EVOLVE-BLOCK in the reply differs from the "
                         "program and was ignored (only the block can change)")
    else:
        body = text
    if not body.strip():
        return EditResult("malformed", None,
                          "The reply's code block is empty; send the new code of the "
                          "EVOLVE-BLOCK.")
    if "\r\n" in block.body or (not block.body and "\r\n" in block.prefix):
        body = body.replace("\n", "\r\n")
    lines = body.count("\n")
    return _finish(code, block, body,
                   f"Replaced the EVOLVE-BLOCK with the reply's code ({lines} line"
                   f"{'s' * (lines != 1)})", notes,
                   noop="the code equals the current EVOLVE-BLOCK")


def _python_fences(reply: str) -> tuple[list[str], bool]:
    """The contents of the Python (or bare) fences, and whether the last one is unclosed."""
    fences: list[str] = []
    lines = reply.split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE_OPEN.match(lines[index])
        index += 1
        if opening is None:
            continue
        width = len(opening.group(1))
        content: list[str] = []
        while index < len(lines) and not _closes_fence(lines[index], width):
            content.append(lines[index])
            index += 1
        is_python = opening.group(2).lower() in _PYTHON_FENCE_WORDS
        if index == len(lines):  # ran off the end: never closed
            return fences, is_python
        index += 1
        if is_python:
            fences.append("".join(line + "\n" for line in content))
    return fences, False


def _closes_fence(line: str, width: int) -> bool:
    """Whether ``line`` closes a fence opened with ``width`` backticks: up to three
    spaces, at least ``width`` backticks, nothing after them but spaces and tabs.
    (Not a regex built from the fence: a reply of a million backticks made one, and
    compiling it took seconds of the event loop.)"""
    rest = line.lstrip(" ")
    if len(line) - len(rest) > 3:
        return False
    ticks = rest.rstrip(" \t")
    return len(ticks) >= width and ticks.count("`") == len(ticks)


def _has_marker(text: str) -> bool:
    return any(_START_LINE.match(line) or _END_LINE.match(line) for line in text.split("\n"))


def _outside_lines(block: EvolveBlock) -> set[str]:
    """The non-blank lines outside the body, without markers or trailing whitespace."""
    lines = split_lines(block.prefix) + split_lines(block.suffix)
    return {line.rstrip() for line in lines
            if line.strip() and not _START_LINE.match(line) and not _END_LINE.match(line)}
