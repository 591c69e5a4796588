"""UCE — Unified Concept Editing (Gandikota et al., WACV 2024).

Closed-form edit of every cross-attention K/V matrix: the target's token rows are mapped to the anchor's, the
preserved concepts' rows to themselves. λ = 0.5, erase and preserve scale 1, as upstream.

Which rows (`rows`):
- "context" (erasekit's default): the target inside generic frames ("a {}", "a photo of a {}", …, or the spec's
  templates), from its first token through the end of the sequence, mapped to the same frames with the anchor; plus a
  caption prior (`prior`, relative weight) that holds the rest of the text space in place. CLIP-style encoders are
  causal, so the concept also lives in every row after its word (EoT, padding, later words): upstream's single row
  leaves it there, and a plain call (`concepts=["triangle"]`, no anchor) erased nothing on ShapeWorld.
  The values are pushed past the anchor, away from the target, v = a − η(c − a) with η = 1 (`eta`; ESD's negative
  guidance, on embedding rows): mapped exactly onto an empty anchor, the model draws whatever the rest of the prompt
  implies, which is the target at its base rate (1 time in 4 for a ShapeWorld texture).
- "last": the last word token only — upstream UCE (`parity="authors"` gives exactly this: last row, no prior, η 0).
- "to_end": last word token through the end of the bare concept text — the copy of UCE in RECE's code.
`keep_empty`, `preserve_rows="all"` and `preserve_scale=None` give the UCE that RECE's authors start from (see rece).

    edit = erasekit.erase(pipe, method="uce", concepts=["Van Gogh"], anchor="art")
    edit = erasekit.erase(pipe, method="uce", concepts=["Van Gogh"], anchor="art", parity="authors")
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from ..concepts import ConceptError
from ..edits import WeightDelta
from ..closed_form.prior import caption_list, caption_prior, relative_prior
from ..closed_form.rows import CONTEXT_TEMPLATES, aligned_rows, all_rows, context_rows, covariance, pushed
from ..closed_form.solver import LowRankUpdate, solve
from ..models import kv_weights
from .registry import register_method

ROWS = ("context", "last", "to_end")


@dataclass
class UCEConfig:
    lam: float = 0.5
    erase_scale: float = 1.0
    preserve_scale: float | None = 1.0  # None: RECE's authors' rule, 1 with no preserved concept, else max(0.1, 1/n)
    rows: str = "context"     # "context" (erasekit) | "last" (upstream) | "to_end" (RECE's copy); see above
    prior: float = 1.0        # caption prior, relative to the erase rows' mass; 0: none (upstream)
    eta: float = 1.0          # values pushed past the anchor, away from the target: a − η(c − a); 0: the anchor
    keep_empty: bool = False  # also keep every token row of "" (the UCE RECE's authors start from)
    preserve_rows: str = "same"  # "same": preserved concepts' rows as `rows` picks them; "all": every token row
    captions: str | None = None  # caption file for the prior (default: see closed_form.prior)
    cache_dir: str | None = None
    parity: str = "erasekit"  # "authors": upstream UCE exactly (rows "last", no prior, η 0), overriding those


def resolved(config: UCEConfig) -> UCEConfig:
    if config.parity not in ("erasekit", "authors"):
        raise ConceptError(f"parity must be 'erasekit' or 'authors', not {config.parity!r}")
    if config.rows not in ROWS or config.preserve_rows not in ("same", "all"):
        raise ConceptError(f"rows must be one of {ROWS} and preserve_rows 'same' or 'all'")
    return replace(config, rows="last", prior=0.0, eta=0.0) if config.parity == "authors" else config


def expand(spec, texts: list[str]) -> list[str]:
    return [template.format(text) for text in texts for template in spec.templates]


def frames(spec) -> list[str]:
    return list(CONTEXT_TEMPLATES) if spec.templates == ["{}"] else spec.templates


def erase_rows(pipe, spec, config: UCEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    if config.rows == "context":
        return context_rows(pipe, spec.targets, spec.anchors, frames(spec))
    anchors = [template.format(a) for a in spec.anchors for template in spec.templates]
    return aligned_rows(pipe, expand(spec, spec.targets), anchors, config.rows)


def preserved_rows(pipe, spec, config: UCEConfig) -> torch.Tensor | None:
    rows = []
    if spec.preserve and config.preserve_rows == "all":
        rows.append(all_rows(pipe, expand(spec, spec.preserve)))
    elif spec.preserve and config.rows == "context":
        rows.append(context_rows(pipe, spec.preserve, spec.preserve, frames(spec))[0])
    elif spec.preserve:
        rows.append(aligned_rows(pipe, expand(spec, spec.preserve), expand(spec, spec.preserve), config.rows)[0])
    if config.keep_empty:
        rows.append(all_rows(pipe, [""]))
    return torch.cat(rows) if rows else None


def uce_updates(pipe, spec, config: UCEConfig, weights: dict[str, torch.Tensor] | None = None
                ) -> dict[str, LowRankUpdate]:
    config = resolved(config)
    erase, value = erase_rows(pipe, spec, config)
    value = pushed(value, erase, config.eta)
    scale = torch.full((len(erase),), config.erase_scale, dtype=torch.float64)
    preserve_cov = None
    kept = preserved_rows(pipe, spec, config)
    if kept is not None:
        preserve_scale = config.preserve_scale
        if preserve_scale is None:
            preserve_scale = max(0.1, 1 / len(spec.preserve)) if spec.preserve else 1.0
        preserve_cov = covariance(kept, preserve_scale)
    if config.prior > 0:
        c2, _ = caption_prior(pipe, caption_list(pipe, spec.targets, config.captions), config.cache_dir)
        prior = relative_prior(c2, erase, scale, config.prior)
        preserve_cov = prior if preserve_cov is None else preserve_cov + prior
    return solve(weights if weights is not None else kv_weights(pipe.unet), erase, value,
                 erase_weights=scale, preserve_cov=preserve_cov, lam=config.lam)


def to_edit(pipe, updates: dict[str, LowRankUpdate], method: str, spec, config, **protocol) -> WeightDelta:
    return WeightDelta.create(pipe, {name: u.compact() for name, u in updates.items()}, method=method,
                              concepts=spec.targets, config={**asdict(config), "spec": spec.to_dict()},
                              protocol=protocol)


@register_method("uce", UCEConfig, "Unified Concept Editing: closed-form K/V edit (baseline)")
def erase_uce(pipe, spec, config: UCEConfig) -> WeightDelta:
    return to_edit(pipe, uce_updates(pipe, spec, config), "uce", spec, config)
