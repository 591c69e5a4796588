"""A preservation prior over a caption list: C = Σ e eᵀ over every token row of every caption.

Used by TRCE stage 1 (the authors' prior) and by erasekit's context rows (UCE, RECE), which edit many rows and need
the rest of the text space held in place. The captions: a user's file, ShapeWorld's own captions of scenes without
the target on the ShapeWorld model, else a built-in neutral list. Priors are cached on disk per text encoder + list.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..models import encode
from ..models.fingerprint import tensors_hash
from ..utils.files import atomic_save_tensors

NEUTRAL_CAPTIONS = Path(__file__).resolve().parent.parent / "presets" / "neutral_captions.txt"


def caption_list(pipe, targets: list[str], captions: str | None = None) -> list[str]:
    """A user's caption file (one a line), ShapeWorld's captions of scenes without the targets, or the built-in
    neutral list."""
    if captions:
        lines = Path(captions).read_text().splitlines()
    elif getattr(pipe, "erasekit_shapeworld", False):
        from ..shapeworld.prompts import neutral_captions
        lines = neutral_captions(exclude=targets)
    else:
        lines = NEUTRAL_CAPTIONS.read_text().splitlines()
    return [line.strip() for line in lines if line.strip()]


def caption_prior(pipe, captions: list[str], cache_dir: str | None = None) -> tuple[torch.Tensor, int]:
    """(C2 = Σ e eᵀ over every token row of the captions, the number of rows); cached per text encoder + list."""
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) else [])
    key = tensors_hash({f"{i}.{n}": p for i, e in enumerate(encoders) for n, p in e.state_dict().items()})
    key += "-" + hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16]
    cache = Path(cache_dir or Path.home() / ".cache" / "erasekit" / "trce") / f"prior-{key}.safetensors"
    if cache.exists():
        stored = load_file(cache)
        return stored["c2"], int(stored["tokens"])
    c2, tokens = None, 0
    for i in range(0, len(captions), 64):
        rows = encode(pipe, captions[i:i + 64], warn=False).embeddings.double()
        rows = rows.reshape(-1, rows.shape[-1])
        c2 = rows.T @ rows if c2 is None else c2 + rows.T @ rows
        tokens += len(rows)
    atomic_save_tensors({"c2": c2, "tokens": torch.tensor(tokens)}, cache)
    return c2, tokens


def relative_weight(c2: torch.Tensor, erase_rows: torch.Tensor, erase_weights: torch.Tensor, weight: float) -> float:
    """The coefficient that makes the prior's trace `weight` times the weighted erase rows' (Σ w_i ‖c_i‖²): a
    strength that depends on neither the caption count nor the number of erase rows."""
    mass = (erase_weights.double() * (erase_rows.double() ** 2).sum(1)).sum()
    return (weight * mass / c2.trace()).item()


def relative_prior(c2: torch.Tensor, erase_rows: torch.Tensor, erase_weights: torch.Tensor, weight: float
                   ) -> torch.Tensor:
    """The prior scaled by `relative_weight`."""
    return c2 * relative_weight(c2, erase_rows, erase_weights, weight)
