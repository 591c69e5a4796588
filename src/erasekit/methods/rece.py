"""RECE — Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024).

Starts from a UCE edit, then for each epoch derives the embedding that still regenerates the concept in the edited
model, c' = (λ_reg I + Σ WᵀW)⁻¹ (Σ Wᵀ W0) c, and erases it in closed form (values: the embedding of " ", which is
also preserved with weight λ1; regulariser λ2). A validation evaluator picks the epoch with the lowest detection.
Defaults follow the authors, by the spec's kind: nudity (λ_reg 0.1, 3 epochs), unsafe (0.1, 2), style (1e-3, 1),
object (0.1, 1); set `lam_reg` / `epochs` to override.

    edit = erasekit.erase(pipe, method="rece", concepts=["nudity"], validator=my_detection_rate)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..edits import WeightDelta
from ..erasure.rows import covariance, kv_weights
from ..erasure.solver import LowRankUpdate, solve
from ..models import encode
from . import register_method
from .uce import UCEConfig, to_edit, uce_updates


DEFAULTS_BY_KIND = {"nudity": (0.1, 3), "unsafe": (0.1, 2), "style": (1e-3, 1), "object": (0.1, 1)}


@dataclass
class RECEConfig:
    epochs: int | None = None     # None: the authors' value for the concept kind
    lam_reg: float | None = None  # regulariser of the derived embedding; None: by concept kind
    lam1: float = 0.1      # weight of " " preserved
    lam2: float = 0.1      # λ of the erase step
    uce: UCEConfig = field(default_factory=lambda: UCEConfig(rows="to_end"))
    # detection rate of the target on the edited pipeline (lower is better); None keeps the last epoch
    validator: Callable | None = None


def derive_embedding(weights: dict[str, torch.Tensor], originals: dict[str, torch.Tensor], target: torch.Tensor,
                     lam_reg: float) -> torch.Tensor:
    """c' = (λ_reg I + Σ_l W_lᵀ W_l)⁻¹ (Σ_l W_lᵀ W0_l) c, for every row of `target` (L, d)."""
    d = target.shape[1]
    lhs = lam_reg * torch.eye(d, dtype=torch.float64)
    rhs = torch.zeros(d, d, dtype=torch.float64)
    for name, w in weights.items():
        w = w.double()
        lhs += w.T @ w
        rhs += w.T @ originals[name].double()
    return torch.linalg.solve(lhs, rhs @ target.double().T).T


def merge(a: dict[str, LowRankUpdate], b: dict[str, LowRankUpdate]) -> dict[str, LowRankUpdate]:
    """The sum of two low-rank updates, still exactly low rank: concatenated factors."""
    return {n: LowRankUpdate(torch.cat([a[n].up, b[n].up], 1), torch.cat([a[n].down, b[n].down], 0)) for n in a}


@torch.no_grad()
def rece_epochs(pipe, spec, config: RECEConfig):
    """Yield (epoch, cumulative updates); epoch 0 is the UCE start."""
    originals = {n: w.clone() for n, w in kv_weights(pipe).items()}
    total = uce_updates(pipe, spec, config.uce, originals)
    yield 0, total
    concept = encode(pipe, spec.targets).embeddings.double()       # all rows of the bare concept text
    space = encode(pipe, [" "] * len(spec.targets)).embeddings.double()
    for epoch in range(1, config.epochs + 1):
        current = {n: originals[n].double() + total[n].full() for n in originals}
        derived = derive_embedding(current, originals, concept.reshape(-1, concept.shape[-1]), config.lam_reg)
        step = solve(current, derived, space.reshape(-1, space.shape[-1]),
                     preserve_cov=covariance(space.reshape(-1, space.shape[-1]), config.lam1), lam=config.lam2)
        total = merge(total, step)
        yield epoch, total


@register_method("rece", RECEConfig, "RECE: UCE then iterative closed-form erasure of derived embeddings")
def erase_rece(pipe, spec, config: RECEConfig) -> WeightDelta:
    lam_reg, epochs = DEFAULTS_BY_KIND[spec.kind]
    config = replace(config, lam_reg=lam_reg if config.lam_reg is None else config.lam_reg,
                     epochs=epochs if config.epochs is None else config.epochs)
    recorded = _recordable(config)
    candidates = []  # (epoch, updates, detection)
    for epoch, updates in rece_epochs(pipe, spec, config):
        if epoch > 0:
            candidates.append((epoch, updates, _validate(pipe, to_edit(pipe, updates, "rece", spec, recorded),
                                                         config.validator)))
    if config.validator is None:
        epoch, updates, _ = candidates[-1]
    else:
        epoch, updates, _ = min(candidates, key=lambda c: (c[2], c[0]))
    history = [{"epoch": e, "detection": d} for e, _, d in candidates]
    return to_edit(pipe, updates, "rece", spec, recorded, chosen_epoch=epoch, epochs=history)


def _validate(pipe, edit: WeightDelta, validator: Callable | None) -> float | None:
    if validator is None:
        return None
    edit.apply(pipe)
    try:
        return float(validator(pipe))
    finally:
        edit.remove(pipe)


def _recordable(config: RECEConfig) -> RECEConfig:
    """The config as metadata: the validator is recorded by name, not as an object."""
    return replace(config, validator=getattr(config.validator, "__name__", None) if config.validator else None)
