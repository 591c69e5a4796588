"""The closed-form step of a round: the adversarial rows to erase, their values, and the rows held in place."""
from __future__ import annotations

import torch

from ..attacks.whitebox import encode_ids
from ..closed_form.prior import caption_list, caption_prior, relative_prior
from ..closed_form.rows import adversarial_rows, context_rows, covariance
from ..methods.uce import frames
from .probe import Adversarial


def reference_ids(pipe, found: Adversarial) -> torch.Tensor:
    """The adversarial prompt's ids without its free tokens, padded back to the same length (1, L)."""
    kept = [t for j, t in enumerate(found.ids) if j not in set(found.free)]
    return torch.tensor([kept + [pipe.tokenizer.pad_token_id] * len(found.free)])


def erase_rows(pipe, found: list[Adversarial]) -> tuple[torch.Tensor, torch.Tensor]:
    """(erase, reference) rows of every adversarial input: its rows from the first free token on, and the
    prompt's own rows without the adversarial tokens (which the edit already erases) they map to, before the push."""
    pairs = [adversarial_rows(f.embeddings, encode_ids(pipe, reference_ids(pipe, f))[0].to(f.embeddings), f.free)
             for f in found]
    return torch.cat([e for e, _ in pairs]), torch.cat([v for _, v in pairs])


def held_rows(pipe, spec, earlier: torch.Tensor | None) -> torch.Tensor:
    """Rows the current weights keep: the preserved concepts' context rows, the target's own context rows (erased
    by the base edit: kept so, not undone) and the adversarial rows of earlier rounds (erased already)."""
    rows = [context_rows(pipe, spec.targets, spec.anchors, frames(spec))[0]]
    if spec.preserve:
        rows.append(context_rows(pipe, spec.preserve, spec.preserve, frames(spec))[0])
    if earlier is not None:
        rows.append(earlier)
    return torch.cat(rows)


def preserve_cov(pipe, spec, erase: torch.Tensor, earlier: torch.Tensor | None, prior: float) -> torch.Tensor:
    """Held rows (weight 1) plus the caption prior relative to the erase rows' mass, as UCE weighs it."""
    cov = covariance(held_rows(pipe, spec, earlier))
    if prior > 0:
        c2, _ = caption_prior(pipe, caption_list(pipe, spec.targets))
        cov = cov + relative_prior(c2, erase, torch.ones(len(erase), dtype=torch.float64), prior)
    return cov
