"""Erasure methods: one module each, a config dataclass and an `erase(pipe, spec, config) -> Edit`.

    edit = erasekit.erase(pipe, method="rece", concepts=["nudity"])
"""
from __future__ import annotations

import time

from ..concepts import resolve
from ..models.text import check_concept_words
from . import abo, esd, forceforget, gie, rece, sld, trce, uce  # noqa: F401  (each registers itself)
from .registry import METHODS, Method, make_config, register_method, shapeworld_settings

__all__ = ["METHODS", "Method", "erase", "make_config", "register_method", "shapeworld_settings"]


def erase(pipe, method: str, concepts=None, *, anchor=None, preserve=None, preset=None, spec_file=None,
          templates=None, **config):
    """Erase `concepts` from `pipe` with `method` and return the Edit (the pipeline is left unchanged). On
    ShapeWorld's pipeline the options not given take the method's ShapeWorld settings (`shapeworld_settings`: the
    bench's budget; the edit's config records them), elsewhere its authors' defaults."""
    make_config(method, **config)  # unknown or bad options fail before anything else
    spec = resolve(concepts, anchor=anchor, preserve=preserve, preset_name=preset, spec_file=spec_file,
                   templates=templates)
    if getattr(pipe, "erasekit_shapeworld", False):
        config = {**shapeworld_settings(method, spec), **config}
    cfg = make_config(method, **config)
    check_concept_words(pipe, [*spec.targets, *spec.anchors, *spec.preserve])
    entry = METHODS[method]
    if entry.prepare is not None:
        cfg = entry.prepare(pipe, spec, cfg)
    start = time.perf_counter()
    edit = entry.run(pipe, spec, cfg)
    edit.metadata["protocol"]["seconds_erase"] = round(time.perf_counter() - start, 3)
    return edit
