"""Per-step randomness derived from (seed, step, …): a resumed run draws exactly what an uninterrupted one would,
with no generator state to save."""
from __future__ import annotations

import hashlib

import torch


def derived_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed from a base seed and keys (a step, a micro-batch, a stream name), stable across runs."""
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(derived_seed(seed, *keys))
