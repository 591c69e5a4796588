"""UCE — Unified Concept Editing (Gandikota et al., WACV 2024).

Closed-form edit of every cross-attention K/V matrix: the target's token rows are mapped to the anchor's, the
preserved concepts' rows to themselves. Defaults as upstream: λ = 0.5, erase and preserve scale 1, last word token.

    edit = erasekit.erase(pipe, method="uce", concepts=["Van Gogh"], anchor="art")
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..edits import WeightDelta
from ..closed_form.rows import aligned_rows, covariance
from ..closed_form.solver import LowRankUpdate, solve
from ..models import kv_weights
from .registry import register_method


@dataclass
class UCEConfig:
    lam: float = 0.5
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    rows: str = "last"  # "last": last word token (upstream); "to_end": last word token through the end (RECE's copy)


def expand(spec, texts: list[str]) -> list[str]:
    return [template.format(text) for text in texts for template in spec.templates]


def uce_updates(pipe, spec, config: UCEConfig, weights: dict[str, torch.Tensor] | None = None
                ) -> dict[str, LowRankUpdate]:
    targets = expand(spec, spec.targets)
    anchors = [template.format(a) for a in spec.anchors for template in spec.templates]
    erase_rows, value_rows = aligned_rows(pipe, targets, anchors, config.rows)
    preserve_cov = None
    if spec.preserve:
        kept, _ = aligned_rows(pipe, expand(spec, spec.preserve), expand(spec, spec.preserve), config.rows)
        preserve_cov = covariance(kept, config.preserve_scale)
    scale = torch.full((len(erase_rows),), config.erase_scale, dtype=torch.float64)
    return solve(weights if weights is not None else kv_weights(pipe.unet), erase_rows, value_rows,
                 erase_weights=scale, preserve_cov=preserve_cov, lam=config.lam)


def to_edit(pipe, updates: dict[str, LowRankUpdate], method: str, spec, config, **protocol) -> WeightDelta:
    return WeightDelta.create(pipe, {name: u.compact() for name, u in updates.items()}, method=method,
                              concepts=spec.targets, config={**asdict(config), "spec": spec.to_dict()},
                              protocol=protocol)


@register_method("uce", UCEConfig, "Unified Concept Editing: closed-form K/V edit (baseline)")
def erase_uce(pipe, spec, config: UCEConfig) -> WeightDelta:
    return to_edit(pipe, uce_updates(pipe, spec, config), "uce", spec, config)
