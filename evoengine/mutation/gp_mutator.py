"""The offline mutator: genetic programming on the EVOLVE-BLOCK, no language model.

It lets ``evo run`` search on a machine with no model configured, and gives LLM runs a
cheap baseline to beat. A child differs from its parent by one operator application
(``gp_operators``) inside the block; everything outside the block is kept byte for byte.

The block body is regenerated with ``ast.unparse``, so comments and the original
formatting inside the block are lost in the child. Blank lines around the code, the
block's indentation and the file's line endings are kept. An indented block (inside a
function or class) is dedented to parse and re-indented afterwards.
"""

from __future__ import annotations

import ast
import functools
import keyword
import logging
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from evoengine.config.llm_schema import GPConfig
from evoengine.mutation.evolve_block import (
    EvolveBlock,
    EvolveBlockError,
    check_edit_confined,
    split_evolve_block,
)
from evoengine.mutation.gp_operators import OPERATORS, OperatorContext
from evoengine.mutation.types import Child, ParentView

logger = logging.getLogger(__name__)

_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class ParsedBlock:
    """A program's EVOLVE-BLOCK with its body parsed, and what is needed to write a
    changed body back in the same layout."""

    block: EvolveBlock
    tree: ast.Module
    dump: str  # ast.dump of the body: equal dumps mean equal code up to comments/format
    indent: str  # the indentation common to the body's code lines
    leading: str  # blank and comment lines before the first code line, kept as they are
    trailing: str  # blank and comment lines after the last code line, kept as they are
    newline: str  # "\r\n" if the body uses it, else "\n"
    source: str  # the dedented body that ``tree`` was parsed from
    whole_file_parses: bool  # whether the full program (not just the block) parses

    def fresh_tree(self) -> ast.Module:
        """A private copy of ``tree`` to mutate (re-parsing beats ``copy.deepcopy``)."""
        return ast.parse(self.source)

    def render(self, tree: ast.Module) -> str:
        """The whole program with ``tree`` as the block body."""
        lines = ast.unparse(tree).split("\n")
        code = "".join((self.indent + line if line else "") + self.newline for line in lines)
        return self.block.with_body(self.leading + code + self.trailing)


def _is_code_line(line: str) -> bool:
    text = line.strip()
    return bool(text) and not text.startswith("#")


@functools.lru_cache(maxsize=1024)
def parse_block(code: str) -> ParsedBlock | None:
    """Split and parse ``code``'s block; None when the body is not valid Python.

    Cached: parents and inspirations recur from step to step. The cached ``tree`` is
    shared, so callers mutate only ``fresh_tree()``.

    Raises ``EvolveBlockError`` for missing or broken markers. Comment lines do not
    count towards the block's indentation (a comment may sit at column 0 inside an
    indented block); those before the first and after the last code line are kept.
    """
    block = split_evolve_block(code)
    lines = [piece + "\n" for piece in block.body.split("\n")[:-1]]  # body ends with \n
    code_lines = [i for i, line in enumerate(lines) if _is_code_line(line)]
    first, last, indent = len(lines), len(lines), ""
    if code_lines:
        first, last = code_lines[0], code_lines[-1] + 1
        margins = [lines[i][: len(lines[i]) - len(lines[i].lstrip(" \t"))] for i in code_lines]
        indent = margins[0]
        for margin in margins[1:]:
            while not margin.startswith(indent):
                indent = indent[:-1]
    dedented = "".join(line[len(indent):] if _is_code_line(line) else "\n" for line in lines)
    try:
        tree = ast.parse(dedented)
    except (SyntaxError, ValueError):  # ValueError: null bytes in the source
        return None
    return ParsedBlock(
        block=block, tree=tree, dump=ast.dump(tree), indent=indent,
        leading="".join(lines[:first]), trailing="".join(lines[last:]),
        newline="\r\n" if "\r\n" in block.body else "\n", source=dedented,
        whole_file_parses=_parses(code),
    )


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def validated_vocabulary(vocabulary: Iterable[Iterable[str]]) -> tuple[tuple[str, ...], ...]:
    """Groups of interchangeable call names, checked and de-duplicated in order.

    A malformed name is a typo in ``problem.gp_vocabulary``: raise ``ValueError`` saying
    so, rather than let every child that uses it fail to parse. Groups of fewer than two
    distinct names offer no swap and are dropped.
    """
    groups: list[tuple[str, ...]] = []
    for number, group in enumerate(vocabulary):
        names: list[str] = []
        for name in group:
            if not (isinstance(name, str) and _DOTTED_NAME.fullmatch(name)) \
                    or any(keyword.iskeyword(part) for part in name.split(".")):
                raise ValueError(
                    f"problem.gp_vocabulary[{number}]: {name!r} is not a dotted call name "
                    "such as 'np.log' or 'max'; fix the list in problem.yaml")
            if name not in names:
                names.append(name)
        if len(names) >= 2:
            groups.append(tuple(names))
    return tuple(groups)


class GPMutator:
    """The ``Mutator`` that applies one GP operator to the parent's EVOLVE-BLOCK.

    Deterministic: every random choice comes from the ``rng`` passed to ``propose``, so
    the same rng state and inputs give the same child (resume and replay rely on this).
    """

    name = "gp"

    def __init__(self, config: GPConfig, vocabulary: Sequence[Sequence[str]]) -> None:
        self._max_attempts = config.max_attempts
        self._sigma = config.constant_sigma
        self._vocabulary = validated_vocabulary(vocabulary)
        weights = {name: float(getattr(config.operators, name, 0.0)) for name in OPERATORS}
        self._weights = {name: weight for name, weight in weights.items() if weight > 0}

    async def propose(self, parent: ParentView, inspirations: list[ParentView],
                      feedback: str, rng: random.Random) -> Child | None:
        """See ``make_child``; ``feedback`` is ignored (GP cannot read it)."""
        return self.make_child(parent, inspirations, rng)

    def make_child(self, parent: ParentView, inspirations: Sequence[ParentView],
                   rng: random.Random) -> Child | None:
        """A child differing from ``parent`` inside its block, or None.

        Tries up to ``max_attempts`` operator draws. An operator that finds nothing to
        work on is not drawn again for this parent; crossover is drawn only while some
        inspiration's block differs from the parent's. None means every attempt was a
        no-op (equal ASTs) or there was nothing to mutate, e.g. a parent whose block
        does not parse. Raises ``EvolveBlockError`` when the parent has no valid markers:
        that is a problem-setup error the user must fix in the seed program.
        """
        parsed = parse_block(parent.code)
        if parsed is None:
            logger.debug("program %s: EVOLVE-BLOCK does not parse; no GP child",
                         parent.program_id)
            return None
        donors = self._donors(parsed, inspirations)
        weights = dict(self._weights)
        if not donors:
            weights.pop("crossover", None)
        line_offset = parsed.block.body_first_line - 1
        check_whole_file = parsed.whole_file_parses
        for _ in range(self._max_attempts):
            if not weights:
                break
            names = list(weights)
            operator = rng.choices(names, weights=[weights[n] for n in names])[0]
            donor_index = rng.randrange(len(donors)) if operator == "crossover" else None
            donor = donors[donor_index] if donor_index is not None else None
            tree = parsed.fresh_tree()
            context = OperatorContext(
                constant_sigma=self._sigma, vocabulary=self._vocabulary,
                donor=donor[1].tree if donor else None, line_offset=line_offset)
            description = OPERATORS[operator](tree, rng, context)
            if description is None:  # nothing to work on; the same draw would fail again
                if donor_index is not None:
                    donors.pop(donor_index)
                if donor_index is None or not donors:
                    weights.pop(operator)
                continue
            code = self._child_code(parent.code, parsed, tree, check_whole_file)
            if code is None:
                continue
            if donor is not None:
                edit = f"crossover with program {donor[0].program_id}: {description}"
            else:
                edit = f"{operator}: {description}"
            return Child(code=code, operator=f"gp:{operator}", model="gp", edit=edit,
                         second_parent_id=donor[0].program_id if donor else None)
        return None

    @staticmethod
    def _donors(parsed: ParsedBlock, inspirations: Sequence[ParentView],
                ) -> list[tuple[ParentView, ParsedBlock]]:
        """Inspirations whose block parses and differs from the parent's, in order."""
        donors = []
        for inspiration in inspirations:
            try:
                donor = parse_block(inspiration.code)
            except EvolveBlockError:
                continue
            if donor is not None and donor.dump != parsed.dump:
                donors.append((inspiration, donor))
        return donors

    @staticmethod
    def _child_code(parent_code: str, parsed: ParsedBlock, tree: ast.Module,
                    check_whole_file: bool) -> str | None:
        """The child's full code, or None if it is a no-op or would not be valid.

        The whole file is re-parsed (when the parent's parses) because an indented
        block is valid on its own but could be re-indented wrongly.
        """
        ast.fix_missing_locations(tree)
        try:
            child_code = parsed.render(tree)
            reparsed = parse_block(child_code)
            if reparsed is None or reparsed.dump == parsed.dump:
                return None
            if check_whole_file:
                ast.parse(child_code)
            check_edit_confined(parent_code, child_code)
        except (SyntaxError, ValueError, RecursionError):  # EvolveBlockError is a ValueError
            return None
        return child_code
