"""A model's prices from litellm's model table, for clients that do not go through
litellm (``llm=openai``).

litellm ships its table as a JSON file in its package; reading that file (about 20 ms)
spares importing litellm (about a second) in a run that does not use it. Without
litellm installed, or for a model the table does not name (a local server's model),
there is no price: the run then counts those calls as $0, and says so when
``search.max_cost`` is set.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from pathlib import Path

from evoengine.config.llm_schema import LLMConfig

TABLE_FILE = "model_prices_and_context_window_backup.json"


@functools.lru_cache(maxsize=64)
def table_prices(model: str) -> tuple[float, float] | None:
    """(input, output) dollars per million tokens for ``model`` (or the model without an
    ``openai/`` prefix) in litellm's table; None when there is no such entry. Kept per
    model (the client and the start-up note ask for the same one); the table itself,
    a few MB of objects, is not kept."""
    table = _table()
    names = [model] + ([model.split("/", 1)[1]] if model.startswith("openai/") else [])
    for name in names:
        entry = table.get(name)
        if not isinstance(entry, dict):
            continue
        prices = (entry.get("input_cost_per_token"), entry.get("output_cost_per_token"))
        if all(isinstance(p, (int, float)) and not isinstance(p, bool) and math.isfinite(p)
               and p >= 0 for p in prices):
            return prices[0] * 1_000_000, prices[1] * 1_000_000
    return None


def _table() -> dict:
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return {}
    if spec is None or spec.origin is None:
        return {}
    try:
        loaded = json.loads((Path(spec.origin).parent / TABLE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def model_prices(config: LLMConfig) -> tuple[float, float] | None:
    """(input, output) dollars per million tokens for ``config``'s model: its
    ``llm.price_*`` (an unset one counts 0), else litellm's table; None if neither."""
    if config.price_input_per_mtok is not None or config.price_output_per_mtok is not None:
        return config.price_input_per_mtok or 0.0, config.price_output_per_mtok or 0.0
    return table_prices(config.model)


def unpriced_note(config: LLMConfig) -> str:
    """A warning naming the models of an ``llm=openai`` run whose calls count as $0
    (no ``llm.price_*`` and not in litellm's table); empty when every one has a price.
    For a run with ``search.max_cost``, which those calls would not use up."""
    from evoengine.llm.ensemble import member_configs

    if config.provider not in ("openai", "auto") or config.replay:
        return ""
    unpriced = [member.model for member, _ in member_configs(config)
                if model_prices(member) is None]
    if not unpriced:
        return ""
    return (f"note: no price is known for {', '.join(dict.fromkeys(unpriced))}: its calls "
            "count as $0 toward search.max_cost; set llm.price_input_per_mtok and "
            "llm.price_output_per_mtok (per million tokens)")
