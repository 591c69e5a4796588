"""The method registry: name → config class, `erase` function and optional `prepare` step."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..errors import ErasekitError


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    run: Callable  # (pipe, spec, config) -> Edit
    summary: str
    # (pipe, spec, config) -> config: method-specific wiring done before `run` (e.g. RECE picks its validator)
    prepare: Callable | None = None


METHODS: dict[str, Method] = {}


def register_method(name: str, config_class: type, summary: str, prepare: Callable | None = None):
    def wrap(run: Callable) -> Callable:
        METHODS[name] = Method(name, config_class, run, summary, prepare)
        return run
    return wrap


def shapeworld_settings(method: str, spec) -> dict:
    """The options a method takes on ShapeWorld where the caller sets none (its config's `shapeworld_settings`)."""
    settings = getattr(METHODS[method].config_class, "shapeworld_settings", None) if method in METHODS else None
    return settings(spec) if settings else {}


def make_config(method: str, **overrides):
    if method not in METHODS:
        raise ErasekitError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    cls = METHODS[method].config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - fields
    if unknown:
        raise ErasekitError(f"{method} has no option(s) {sorted(unknown)}; options: {sorted(fields)}")
    return cls(**overrides)
