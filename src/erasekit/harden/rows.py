"""The closed-form step of a round: the adversarial rows to erase, their values, and the rows held in place."""
from __future__ import annotations

import torch

from ..attacks.whitebox import encode_ids
from ..closed_form.prior import caption_list, caption_prior, relative_prior
from ..closed_form.rows import adversarial_rows, context_rows, covariance
from ..methods.uce import frames
from .probe import Adversarial


def free_runs_replaced(ids: list[int], free, anchor: list[int], pad: int) -> list[int]:
    """`ids` with each run of free positions replaced by `anchor` (or left out), padded with `pad` or cut to
    their length."""
    free, out = set(free), []
    for j, token in enumerate(ids):
        if j not in free:
            out.append(token)
        elif j - 1 not in free:
            out += anchor
    return (out + [pad] * len(ids))[:len(ids)]


def anchor_ids(pipe, spec, found: Adversarial) -> list[int]:
    """The anchor's tokens where the adversarial tokens are the whole prompt (P4D-N's), so that they map to what
    the base edit maps the concept to, not to the empty prompt — the model's prior, which draws a ShapeWorld shape
    one time in six; else none: the prompt's own words are the reference (`HardenConfig.anchor_alone`)."""
    kept = pipe.tokenizer.decode([t for j, t in enumerate(found.ids) if j not in set(found.free)],
                                 skip_special_tokens=True)
    if not spec.anchors or not spec.anchors[0].strip() or kept.strip():
        return []
    return pipe.tokenizer(spec.anchors[0], add_special_tokens=False).input_ids


def erase_rows(pipe, found: list[Adversarial], spec, anchored: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(erase, reference) rows of every adversarial input: its rows from the first free token on, and the rows of
    the same prompt without its adversarial tokens (which the edit already erases) — or, `anchored`, with the
    anchor in their place where they are the whole prompt (`anchor_ids`) — before the push."""
    pairs = []
    for f in found:
        anchor = anchor_ids(pipe, spec, f) if anchored else []
        ids = torch.tensor([free_runs_replaced(f.ids, f.free, anchor, pipe.tokenizer.pad_token_id)])
        pairs.append(adversarial_rows(f.embeddings, encode_ids(pipe, ids)[0].to(f.embeddings), f.free, len(anchor)))
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
