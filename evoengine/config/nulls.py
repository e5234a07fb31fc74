"""The one-line message for ``KEY=null`` on a key the schema does not let be null.

OmegaConf says only "field 'search.max_evaluations' is not Optional" (Hydra wraps it in
"Error merging override ..."): neither what null means here nor what to give instead.
The type and the default come from the schema dataclasses (:class:`RunConfig` down).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from omegaconf import MISSING

_NO_DEFAULT = object()

# What a user writes for each plain type, and a value's example in override syntax.
_TYPE_WORDS = {int: "a whole number", float: "a number", str: "a string",
               bool: "true or false"}


def not_null_message(key: str, root: type | None = None, assign: str = "=") -> str:
    """``key: cannot be null; give it ...`` naming ``key``'s schema type (and default);
    ``assign`` joins key and value in the example (``": "`` for a YAML file)."""
    if root is None:
        from evoengine.config.schema import RunConfig

        root = RunConfig
    kind, default = _field_at(root, key)
    what = "the override" if assign == "=" else "it"
    if kind is None:
        return f"{key}: cannot be null; give it a value, or leave {what} out"
    words = _describe(kind)
    example = _example(default)
    if example is not None:
        return (f"{key}: cannot be null; give it {words}, e.g. {key}{assign}{example} "
                "(the default)")
    if default == MISSING and assign != "=":  # a file must give a mandatory key
        return f"{key}: cannot be null; give it {words} (it has no default)"
    return f"{key}: cannot be null; give it {words}, or leave {what} out"


def _field_at(root: type, key: str) -> tuple[Any, Any]:
    """The type and default of ``key`` (``llm.models[0].weight``) under ``root``;
    (None, no default) when the schema has no such key."""
    kind: Any = root
    default: Any = _NO_DEFAULT
    for part in re.findall(r"[^.\[\]]+", key):
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if dataclasses.is_dataclass(kind):
            fields = {f.name: f for f in dataclasses.fields(kind)}
            if part not in fields:
                return None, _NO_DEFAULT
            found = fields[part]
            kind = typing.get_type_hints(kind)[part]
            default = found.default  # MISSING for a factory or a mandatory field
        elif origin in (list, dict) and args:
            kind, default = args[-1], _NO_DEFAULT
        else:
            return None, _NO_DEFAULT
    return kind, default


def _describe(kind: Any) -> str:
    """``kind`` as a user writes such a value: ``a whole number (int)``, ``a list``..."""
    if kind in _TYPE_WORDS:
        word = _TYPE_WORDS[kind]
        return word if kind in (bool, str) else f"{word} ({kind.__name__})"
    origin = typing.get_origin(kind)
    if origin is list:
        return "a list in brackets ([a,b]; [] for none)"
    if origin is dict:
        return "a mapping in braces ({KEY: VALUE}; {} for none)"
    if dataclasses.is_dataclass(kind):
        keys = ", ".join(f.name for f in dataclasses.fields(kind))
        return f"a mapping with keys {keys}"
    return f"a value of type {getattr(kind, '__name__', kind)}"


def _example(default: Any) -> str | None:
    """``default`` as an override's value, when it is a plain one."""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, (int, float)) and default == default and abs(default) != float("inf"):
        return repr(default)
    if isinstance(default, str) and re.fullmatch(r"[\w.:/@-]+", default):
        return default
    return None
