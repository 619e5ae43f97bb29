"""The model registry: every preset of every family under one name.

A family module registers its builder with its ``PRESETS`` dict; ``build(name, **overrides)``
merges the overrides over the preset's kwargs (overrides win) and calls the builder.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import keras


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, family, builder function and preset kwargs."""

    name: str
    family: str
    builder: Callable[..., keras.Model]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self, /, **overrides: Any) -> keras.Model:
        return self.builder(**{**self.kwargs, **overrides})


_MODELS: dict[str, ModelSpec] = {}


def register(name: str, family: str, builder: Callable[..., keras.Model], /, **kwargs: Any) -> None:
    """Register ``builder`` with preset ``kwargs`` under ``name``; a duplicate name raises."""
    if name in _MODELS:
        raise ValueError(f"A model named {name!r} is already registered ({_MODELS[name].family}).")
    _MODELS[name] = ModelSpec(name, family, builder, dict(kwargs))


def register_family(family: str, builder: Callable[..., keras.Model], presets: Mapping[str, dict]) -> None:
    """Register every preset of a family; its ``"tiny"`` preset becomes ``"<family>_tiny"``."""
    for preset, kwargs in presets.items():
        register(f"{family}_tiny" if preset == "tiny" else preset, family, builder, **kwargs)


def get(name: str) -> ModelSpec:
    """Return the spec registered under ``name``; an unknown name lists the known ones."""
    _load_families()
    try:
        return _MODELS[name]
    except KeyError:
        known = ", ".join(sorted(_MODELS))
        raise ValueError(f"Unknown model {name!r}. Known models: {known}.") from None


def build(name: str, /, **overrides: Any) -> keras.Model:
    """Build the registered model ``name`` with ``overrides`` merged over its preset.

    Example:
        >>> model = build("resnet50", num_classes=10, input_shape=(64, 64, 3))
    """
    return get(name).build(**overrides)


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models matching the shell-style ``pattern``, sorted."""
    _load_families()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def _load_families() -> None:
    # Importing bigkeras.models registers every family exactly once.
    import bigkeras.models  # noqa: F401
