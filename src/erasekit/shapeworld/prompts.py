"""ShapeWorld prompt lists built from the vocabulary."""
from __future__ import annotations

import random

import numpy as np

from .captions import caption
from .domain import ATTRIBUTES
from .render import sample_scene


def neutral_captions(exclude: list[str] = (), n: int = 300, seed: int = 0) -> list[str]:
    """Training-style captions of random scenes that show none of the `exclude` concepts (names or artists)."""
    rng, scene_rng = random.Random(seed), np.random.default_rng(seed)
    banned = {v.name for values in ATTRIBUTES.values() for v in values if v.name in exclude or v.artist in exclude}
    out = []
    while len(out) < n:
        scene = sample_scene(scene_rng)
        if banned & {scene.shape, scene.color, scene.texture, scene.background}:
            continue
        out.append(caption(scene, rng)[0])
    return out
