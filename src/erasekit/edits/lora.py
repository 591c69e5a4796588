"""LoRA files that plain diffusers loads with `pipe.load_lora_weights(path)`: factoring a ΔW and writing the
factors in diffusers' PEFT naming (`unet.<module>.lora_A/lora_B.weight`, scale 1)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..utils.files import atomic_save_tensors


def factor(delta: torch.Tensor, max_rank: int | None, tol: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """ΔW ≈ B A by SVD at its numerical rank (singular values above tol·σ_max), capped at max_rank.
    Returns (B, A, relative Frobenius error)."""
    u, s, vh = torch.linalg.svd(delta.double(), full_matrices=False)
    rank = max(1, int((s > tol * s[0]).sum())) if s[0] > 0 else 1
    if max_rank is not None:
        rank = min(rank, max_rank)
    b, a = u[:, :rank] * s[:rank], vh[:rank]
    error = ((delta.double() - b @ a).norm() / delta.double().norm().clamp_min(1e-30)).item()
    return b.float(), a.float(), error


def write_lora(factors: dict[str, tuple[torch.Tensor, torch.Tensor]], path: str | Path, method: str) -> Path:
    """factors: `component.module` (unet, text_encoder, text_encoder_2) → (B, A) with ΔW = B A; written
    atomically."""
    tensors = {}
    for module, (b, a) in factors.items():
        tensors[f"{module}.lora_A.weight"] = a
        tensors[f"{module}.lora_B.weight"] = b
    return atomic_save_tensors(tensors, path, metadata={"format": "pt", "erasekit_method": method})
