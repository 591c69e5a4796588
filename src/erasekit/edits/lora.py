"""Export a weight-delta Edit as a LoRA file that plain diffusers loads with `pipe.load_lora_weights(path)`."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import EditError


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


def export_lora(edit, path: str | Path, max_rank: int | None = None, tol: float = 1e-7) -> dict:
    """Write the edit's ΔW as `unet.<module>.lora_A/lora_B.weight` (diffusers' PEFT format, scale 1).

    Exact where the stored rank fits `max_rank`; otherwise an SVD truncation whose error is returned."""
    from .weight_delta import DOWN, UP, WeightDelta
    if not isinstance(edit, WeightDelta):
        raise EditError(f"{edit} is a {edit.kind} edit: only weight-delta edits can be exported as LoRA")
    tensors, report = {}, {}
    for name in edit.param_names:
        if not name.endswith(".weight") or edit.delta(name).ndim != 2:
            raise EditError(f"{name}: only linear-layer weights can be exported as LoRA")
        module = name[: -len(".weight")]
        stored_rank = edit.tensors[UP + name].shape[1] if UP + name in edit.tensors else None
        if stored_rank is not None and (max_rank is None or stored_rank <= max_rank):
            b, a, error = edit.tensors[UP + name], edit.tensors[DOWN + name], 0.0
        else:
            b, a, error = factor(edit.delta(name), max_rank, tol)
        tensors[f"unet.{module}.lora_A.weight"] = a.contiguous()
        tensors[f"unet.{module}.lora_B.weight"] = b.contiguous()
        report[name] = {"rank": a.shape[0], "relative_error": error}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, tmp, metadata={"format": "pt", "erasekit_method": edit.method})
    tmp.replace(path)
    return {"path": str(path), "max_relative_error": max(r["relative_error"] for r in report.values()),
            "ranks": sorted({r["rank"] for r in report.values()}), "layers": report}
