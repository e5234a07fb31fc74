"""Text from outside the engine on the user's terminal (the CLI's lines, the TUI's panes).

A candidate's output, a model server's error message and anything quoting them can
hold control characters: an escape sequence that clears the screen, moves the cursor
over earlier lines or retitles the window, or a bidirectional override that shows code
in another order than it runs ("Trojan Source"). :func:`shown` writes them as visible
escapes instead, and :func:`markup_free` keeps Rich from reading square brackets in
them as style tags (``[/x]`` raised ``MarkupError`` and ended the command).
"""

from __future__ import annotations

import re
import shlex

# C0 controls but newline and tab, DEL, the C1 controls (an 8-bit CSI among them), and
# the bidirectional marks, embeddings, overrides and isolates
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                      "\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(text: str) -> str:
    """``text`` with every control character but newline and tab, and every bidirectional
    control, as a ``\\xNN`` (``\\uNNNN``) escape."""
    return _CONTROL.sub(_escape, text)


def markup_free(text: str) -> str:
    """:func:`shown` ``text``, escaped for a Rich string that has markup of its own."""
    from rich.markup import escape  # not at import: `evo` imports this module at start

    return escape(shown(text))


def command_line(*words: object) -> str:
    """``words`` as one shell command a user can paste: a word with spaces or shell
    characters (a path such as ``my runs/x``) is quoted, plain ones stay as they are."""
    return " ".join(shlex.quote(str(word)) for word in words)
