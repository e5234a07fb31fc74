"""The ``rl`` settings of ``evo export`` and ``evo train``: the run's stored ``rl``
config (defaults for a run made before RL existed, or for a JSONL file) with
``rl.KEY=VALUE`` overrides from the command line."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from evoengine.config.checks import ConfigValueError
from evoengine.config.compose import ConfigError, overrides_patch, validate_tree
from evoengine.config.rl_schema import RLConfig
from evoengine.errors import first_line


def rl_config(stored: dict[str, Any] | None, overrides: list[str]) -> RLConfig:
    """Typed and validated; a bad override is a one-line ConfigError naming the key."""
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or not key.startswith("rl."):
            raise ConfigError(f"{override}: give rl.KEY=VALUE overrides (see conf/rl/"
                              "default.yaml for the keys)")
    try:
        node = OmegaConf.merge(OmegaConf.structured(RLConfig), stored or {},
                               overrides_patch(overrides, "this command", drop_prefix="rl."))
        config = OmegaConf.to_object(node)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or ""
        first = first_line(exc)
        raise ConfigError(f"rl.{key}: {first}" if key else first) from None
    assert isinstance(config, RLConfig)
    try:
        validate_tree(config)
    except ConfigValueError as exc:
        raise ConfigError(str(exc)) from None
    return config
