"""RECE — Reliable and Efficient Concept Erasure (Gong et al., ECCV 2024).

Starts from a UCE edit, then for each epoch derives the embedding that still regenerates the concept in the edited
model, c' = (λ_reg I + Σ WᵀW)⁻¹ (Σ Wᵀ W0) c, and erases it in closed form (values: the embedding of " ", which is
also preserved with weight λ1; regulariser λ2). For an artistic style with an anchor, the values are the anchor's
rows and the preserved rows are "" plus the other artists (weight λ1), as the authors' artist script does.
A validator picks the epoch with the lowest detection rate (erasekit: the start is a candidate too).
Defaults follow the authors, by the spec's kind: nudity (λ_reg 0.1, 3 epochs), unsafe (0.1, 2), style (1e-3, 1),
object (0.1, 1); set `lam_reg` / `epochs` to override. The validator is chosen by RECE itself (`prepare`):
`validator="auto"` (default) uses the ShapeWorld classifier for a ShapeWorld concept on the ShapeWorld model (or a
`shapeworld/` preset), and none elsewhere; pass a function pipe → detection rate, or None to keep the last epoch.

The start (`uce`): erasekit's UCE default (context rows and caption prior, which erase when RECE is called with a
bare concept) with the authors' preservation of every row of "" (`keep_empty`). `parity="authors"` starts from the
authors' own UCE instead: rows from the last word token to the end, every token row of "" and of each preserved
concept kept with scale max(0.1, 1/n) (1 with none), no prior.

    edit = erasekit.erase(pipe, method="rece", concepts=["nudity"], validator=my_detection_rate)
    edit = erasekit.erase(pipe, method="rece", concepts=["nudity"], parity="authors")
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..edits import WeightDelta
from ..closed_form.rows import all_rows, covariance, pushed
from ..closed_form.solver import LowRankUpdate, factors
from ..concepts import ConceptError
from ..models import kv_weights
from .registry import register_method
from .uce import UCEConfig, to_edit, uce_updates
from .validation import shapeworld_validator


DEFAULTS_BY_KIND = {"nudity": (0.1, 3), "unsafe": (0.1, 2), "style": (1e-3, 1), "object": (0.1, 1)}


@dataclass
class RECEConfig:
    epochs: int | None = None     # None: the authors' value for the concept kind
    lam_reg: float | None = None  # regulariser of the derived embedding; None: by concept kind
    lam1: float = 0.1      # weight of " " preserved
    lam2: float = 0.1      # λ of the erase step
    uce: UCEConfig = field(default_factory=lambda: UCEConfig(keep_empty=True))  # the start; see the docstring
    eta: float = 0.0          # each epoch's values pushed past " " (or the anchor), away from the concept
    parity: str = "erasekit"  # "authors": start from the authors' UCE (overrides `uce`), η 0
    # detection rate of the target on the edited pipeline (lower is better); None keeps the last epoch;
    # "auto": chosen by `prepare` (see the module docstring)
    validator: Callable | str | None = "auto"

    def __post_init__(self):
        if isinstance(self.uce, dict):  # from a saved edit's config or `--option uce={...}`
            self.uce = UCEConfig(**self.uce)


def derive_embedding(weights: dict[str, torch.Tensor], originals: dict[str, torch.Tensor], target: torch.Tensor,
                     lam_reg: float) -> torch.Tensor:
    """c' = (λ_reg I + Σ_l W_lᵀ W_l)⁻¹ (Σ_l W_lᵀ W0_l) c, for every row of `target` (L, d)."""
    w, w0 = _stack(weights), _stack(originals)
    return _derive(w.T @ w, w.T @ w0, target, lam_reg)


def _stack(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([w.double() for w in weights.values()])


def _derive(gram: torch.Tensor, cross: torch.Tensor, target: torch.Tensor, lam_reg: float) -> torch.Tensor:
    lhs = gram + lam_reg * torch.eye(gram.shape[0], dtype=torch.float64)
    return torch.linalg.solve(lhs, cross @ target.double().T).T


def merge(a: dict[str, LowRankUpdate], b: dict[str, LowRankUpdate]) -> dict[str, LowRankUpdate]:
    """The sum of two low-rank updates, still exactly low rank: concatenated factors."""
    return {n: LowRankUpdate(torch.cat([a[n].up, b[n].up], 1), torch.cat([a[n].down, b[n].down], 0)) for n in a}


AUTHORS_START = UCEConfig(rows="to_end", prior=0.0, eta=0.0, keep_empty=True, preserve_rows="all",
                          preserve_scale=None)


def start_config(config: RECEConfig) -> UCEConfig:
    if config.parity not in ("erasekit", "authors"):
        raise ConceptError(f"parity must be 'erasekit' or 'authors', not {config.parity!r}")
    return AUTHORS_START if config.parity == "authors" else config.uce


def epoch_rows(pipe, spec) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, preserved rows) of each epoch's erase step: " " and " " (λ1), or for a style with an anchor, the
    anchor's rows and "" plus the other artists (the authors' artist script)."""
    if spec.kind == "style" and any(a.strip() for a in spec.anchors):
        return all_rows(pipe, spec.anchors), all_rows(pipe, [""] + spec.preserve)
    space = all_rows(pipe, [" "] * len(spec.targets))
    return space, space


@torch.no_grad()
def rece_epochs(pipe, spec, config: RECEConfig):
    """Yield (epoch, cumulative updates); epoch 0 is the UCE start."""
    originals = {n: w.clone() for n, w in kv_weights(pipe.unet).items()}
    start = uce_updates(pipe, spec, start_config(config), originals)
    values, kept = epoch_rows(pipe, spec)
    yield 0, start
    yield from rece_updates(originals, start, all_rows(pipe, spec.targets), values, config, kept)


def rece_updates(originals: dict[str, torch.Tensor], start: dict[str, LowRankUpdate], concept: torch.Tensor,
                 space: torch.Tensor, config: RECEConfig, kept: torch.Tensor | None = None):
    """RECE's epochs from a starting update (UCE's), on token rows; yields (epoch, cumulative updates).
    `space`: the value rows (aligned with `concept`); `kept`: the rows preserved with weight λ1 (default `space`).

    All K/V matrices are stacked, W0 (N x d). With the edit so far W = W0 + U D (U: N x m, D: m x d, D shared by
    every matrix), the Gram matrices come from G0 = W0ᵀW0, computed once, plus rank-m terms:
    WᵀW = G0 + AD + (AD)ᵀ + Dᵀ(UᵀU)D and WᵀW0 = G0 + DᵀAᵀ with A = W0ᵀU — O(N·d·m) per epoch, not O(N·d²)."""
    names, rows = list(originals), [w.shape[0] for w in originals.values()]
    w0 = _stack(originals)
    g0 = w0.T @ w0
    total = start
    for epoch in range(1, config.epochs + 1):
        u = torch.cat([total[n].up for n in names])                 # (N, m)
        d = total[names[0]].down                                    # (m, d)
        a = w0.T @ u
        ad = a @ d
        gram = g0 + ad + ad.T + d.T @ (u.T @ u) @ d
        derived = _derive(gram, g0 + d.T @ a.T, concept, config.lam_reg)
        eta = 0.0 if config.parity == "authors" else config.eta
        preserve = covariance(space if kept is None else kept, config.lam1)
        shift, down = factors(derived, pushed(space, concept, eta), preserve_cov=preserve, lam=config.lam2)
        up = (w0 @ shift.T + u @ (d @ shift.T)).split(rows)         # W_current @ shiftᵀ, without forming W
        total = merge(total, {n: LowRankUpdate(up[k], down) for k, n in enumerate(names)})
        yield epoch, total


def prepare(pipe, spec, config: RECEConfig) -> RECEConfig:
    """Resolve `validator="auto"`: the ShapeWorld classifier's detection rate for a ShapeWorld concept on the
    ShapeWorld model or from a `shapeworld/` preset, else no validation (the last epoch is kept)."""
    if config.validator != "auto":
        return config
    shapeworld = getattr(pipe, "erasekit_shapeworld", False) or spec.name.startswith("shapeworld/")
    return replace(config, validator=shapeworld_validator(spec) if shapeworld else None)


@register_method("rece", RECEConfig, "RECE: UCE then iterative closed-form erasure of derived embeddings",
                 prepare=prepare)
def erase_rece(pipe, spec, config: RECEConfig) -> WeightDelta:
    lam_reg, epochs = DEFAULTS_BY_KIND[spec.kind]
    config = replace(config, lam_reg=lam_reg if config.lam_reg is None else config.lam_reg,
                     epochs=epochs if config.epochs is None else config.epochs)
    recorded = _recordable(config)
    # erasekit lets the validator keep the start too when no epoch beats it (on ShapeWorld an epoch that maps the
    # derived embedding to " " can bring back what the start erased); the authors choose among the epochs
    first = 0 if config.validator is not None and config.parity == "erasekit" else 1
    candidates = []  # (epoch, updates, detection)
    for epoch, updates in rece_epochs(pipe, spec, config):
        if epoch >= first:
            candidates.append((epoch, updates, _validate(pipe, to_edit(pipe, updates, "rece", spec, recorded),
                                                         config.validator)))
    if config.validator is None:
        epoch, updates, _ = candidates[-1]
    else:  # the lowest detection; on a tie an epoch before the start, then the earliest
        epoch, updates, _ = min(candidates, key=lambda c: (c[2], c[0] == 0, c[0]))
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
