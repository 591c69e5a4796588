"""Erasure methods: one module each, a config dataclass and an `erase(pipe, spec, config) -> Edit`.

    edit = erasekit.erase(pipe, method="rece", concepts=["nudity"])
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

from ..concepts import resolve
from ..errors import ErasekitError


@dataclass(frozen=True)
class Method:
    name: str
    config_class: type
    run: Callable  # (pipe, spec, config) -> Edit
    summary: str


METHODS: dict[str, Method] = {}


def register_method(name: str, config_class: type, summary: str):
    def wrap(run: Callable) -> Callable:
        METHODS[name] = Method(name, config_class, run, summary)
        return run
    return wrap


def _load_all() -> None:
    from . import gie, rece, sld, trce, uce  # noqa: F401  (registration on import)


def make_config(method: str, **overrides):
    _load_all()
    if method not in METHODS:
        raise ErasekitError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}")
    cls = METHODS[method].config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(overrides) - fields
    if unknown:
        raise ErasekitError(f"{method} has no option(s) {sorted(unknown)}; options: {sorted(fields)}")
    return cls(**overrides)


def erase(pipe, method: str, concepts=None, *, anchor=None, preserve=None, preset=None, spec_file=None,
          templates=None, **config):
    """Erase `concepts` from `pipe` with `method` and return the Edit (the pipeline is left unchanged)."""
    cfg = make_config(method, **config)
    spec = resolve(concepts, anchor=anchor, preserve=preserve, preset_name=preset, spec_file=spec_file,
                   templates=templates)
    start = time.perf_counter()
    edit = METHODS[method].run(pipe, spec, cfg)
    edit.metadata["protocol"]["seconds_erase"] = round(time.perf_counter() - start, 3)
    return edit
