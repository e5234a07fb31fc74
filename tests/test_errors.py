"""The helpers behind one-line errors (evoengine/errors.py)."""

from __future__ import annotations

from evoengine.errors import causes, first_line


def test_causes_walks_the_chain_once_even_when_it_loops() -> None:
    inner, outer = ValueError("what happened"), RuntimeError("wrapped")
    outer.__cause__ = inner
    inner.__context__ = outer  # a loop, as a re-raise inside an except block can make
    assert list(causes(outer)) == [outer, inner]


def test_first_line_quotes_the_first_line_or_the_type() -> None:
    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(ValueError("x" * 300), 200) == "x" * 200
