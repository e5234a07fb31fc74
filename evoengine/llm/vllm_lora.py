"""LoRA adapters of ``llm=vllm``: the registry of adapter names, int ids and folders a
:class:`~evoengine.llm.vllm_client.VLLMClient` samples with, the ``max_lora_rank`` its
engine is built with, and which adapter a task's last request was queued with.

``llm.lora_adapters`` maps names to adapter folders (PEFT format) and
``llm.lora_adapter`` names the one to sample with (None: the base model). Configured
adapters get the int id ``1 + their index among the sorted names``; adapters added
later with :meth:`VLLMClient.add_adapter` get the next unused id, and re-adding a name
with a different folder gives it a new id too (vLLM caches loaded weights by id, so an
id is never reused for other weights). :meth:`VLLMClient.use_adapter` switches the
adapter for requests queued from then on; requests already queued keep theirs (a batch
that mixes adapters is split into one ``chat`` call per adapter). :func:`served_adapter`
tells the caller which adapter its last request in this task was queued with (the RL
schedule labels each child with it). :meth:`VLLMClient.prepare_lora` builds the engine
with LoRA even before any adapter exists (``rl.enabled`` adds them during the run).
The engine is built with ``enable_lora=True`` only when an adapter is known by then
(configured, or added before the first request), with ``max_lora_rank`` the smallest
size vLLM accepts that holds the largest ``r`` in the adapters' ``adapter_config.json``
(16 when unknown). An adapter cannot be added to an engine built without LoRA, nor one
above the engine's ``max_lora_rank``.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from evoengine.llm.retry import one_line
from evoengine.llm.types import LLMError

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
DEFAULT_LORA_RANK = 16
AdapterKey = tuple[str, int, str]  # (name, int id, folder): what a LoRARequest carries
# The adapter of the last request queued in this task (a context variable: each
# controller step is a task of its own, so concurrent steps do not see each other's).
_SERVED_ADAPTER: ContextVar[str | None] = ContextVar("evoengine_vllm_adapter", default=None)


def served_adapter() -> str | None:
    """The LoRA adapter the current task's last vLLM request was queued with."""
    return _SERVED_ADAPTER.get()


def reset_served_adapter() -> None:
    _SERVED_ADAPTER.set(None)


def note_served_adapter(adapter: AdapterKey | None) -> None:
    """Record that the current task's request was queued with ``adapter``."""
    _SERVED_ADAPTER.set(adapter[0] if adapter else None)


def existing_path(path: str, what: str) -> str:
    """``path`` made absolute; LLMError("model") naming ``what`` when it does not exist."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise LLMError("model", one_line(f"{what}={path!r} does not exist: llm=vllm loads "
                                         "from a local path (download the model first)"))
    return str(resolved.resolve())


def adapter_rank(folder: str) -> int | None:
    """The LoRA rank ``r`` in ``folder/adapter_config.json``; None when unreadable."""
    try:
        rank = json.loads((Path(folder) / "adapter_config.json").read_text())["r"]
        return int(rank)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lora_rank_for(ranks: list[int | None]) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds every known rank."""
    known = [rank for rank in ranks if rank is not None]
    need = max(known, default=DEFAULT_LORA_RANK)
    return next((size for size in LORA_RANKS if size >= need), need)


class LoRAAdapters:
    """Known adapters (name -> int id and folder), the active one, and the LoRA options
    of the engine: :meth:`engine_options` before it is built, :meth:`engine_built` after.

    ``enable_lora`` overrides whether the engine is built with LoRA (default: when an
    adapter is known at build time).
    """

    def __init__(self, configured: dict[str, str], active: str | None,
                 enable_lora: bool | None = None) -> None:
        self._known: dict[str, tuple[int, str]] = {}
        for index, name in enumerate(sorted(configured), start=1):
            folder = existing_path(configured[name], f"llm.lora_adapters.{name}")
            self._known[name] = (index, folder)
        self._next_id = len(self._known) + 1
        self.active: str | None = None
        self.use(active)
        self._enable_lora = enable_lora
        self._engine_lora: bool | None = None  # LoRA on in the built engine
        self._engine_rank: int | None = None
        self._min_rank: int | None = None  # prepare: adapters to come

    def folders(self) -> dict[str, str]:
        """Known adapters: name -> folder."""
        return {name: folder for name, (_, folder) in self._known.items()}

    def use(self, name: str | None) -> None:
        """Make ``name`` the active adapter (None: the base model)."""
        if name is not None and name not in self._known:
            known = ", ".join(sorted(self._known)) or "none"
            raise LLMError("model", f"unknown LoRA adapter {name!r} (known: {known}); "
                                    "add it to llm.lora_adapters or call add_adapter")
        self.active = name

    def add(self, name: str, path: str) -> int:
        """Make adapter folder ``path`` known as ``name``; returns its LoRA int id."""
        folder = existing_path(path, f"LoRA adapter {name}")
        if self._engine_lora is False:
            raise LLMError("bad_request", f"cannot add LoRA adapter {name!r}: the model was "
                           "loaded without LoRA (configure an adapter in llm.lora_adapters, "
                           "or add one before the first request)")
        rank = adapter_rank(folder)
        if self._engine_rank is not None and rank is not None and rank > self._engine_rank:
            raise LLMError("bad_request", f"LoRA adapter {name!r} has rank {rank}, above "
                           f"the loaded engine's max_lora_rank {self._engine_rank}")
        known = self._known.get(name)
        if known is not None and known[1] == folder:
            return known[0]
        self._known[name] = (self._next_id, folder)
        self._next_id += 1
        return self._next_id - 1

    def prepare(self, rank: int) -> None:
        """Build the engine with LoRA on and a ``max_lora_rank`` that holds ``rank``."""
        if self._engine_lora is not None:
            raise LLMError("bad_request", "prepare_lora must be called before the first "
                                          "request (the engine is already loaded)")
        self._enable_lora = True
        self._min_rank = max(rank, self._min_rank or 0)

    def key(self) -> AdapterKey | None:
        """What a ``LoRARequest`` for the active adapter carries (None: base model)."""
        if self.active is None:
            return None
        lora_id, folder = self._known[self.active]
        return (self.active, lora_id, folder)

    def engine_options(self) -> dict[str, Any]:
        """``enable_lora`` (and ``max_lora_rank`` when on) for building the engine now."""
        enable = bool(self._known) if self._enable_lora is None else self._enable_lora
        options: dict[str, Any] = {"enable_lora": enable}
        if enable:
            options["max_lora_rank"] = lora_rank_for(
                [adapter_rank(folder) for _, folder in self._known.values()]
                + [self._min_rank])
        return options

    def engine_built(self, options: dict[str, Any]) -> None:
        """The engine was built with ``options`` (from :meth:`engine_options`)."""
        self._engine_lora = bool(options["enable_lora"])
        self._engine_rank = options.get("max_lora_rank")
