"""Selecting text-embedding rows for closed-form edits."""
from __future__ import annotations

import torch

from ..concepts import ConceptError
from ..models import encode


def word_count(pipe, text: str) -> int:
    return len(pipe.tokenizer(text, add_special_tokens=False).input_ids)


def aligned_rows(pipe, targets: list[str], anchors: list[str], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-aligned (erase, value) embeddings: the last word token of each target and of its anchor ("last"), or
    from the last word token through the end of the sequence ("to_end"). An empty anchor's "last word" is SoT."""
    if mode not in ("last", "to_end"):
        raise ValueError(f"rows must be 'last' or 'to_end', not {mode!r}")
    for target, anchor in zip(targets, anchors):
        if word_count(pipe, target) == 0:
            raise ConceptError(f"concept {target!r} tokenises to nothing")
        if word_count(pipe, anchor) > word_count(pipe, target):
            raise ConceptError(f"anchor {anchor!r} ({word_count(pipe, anchor)} tokens) is longer than the target "
                               f"{target!r} ({word_count(pipe, target)} tokens): rows cannot be aligned")
    t, a = encode(pipe, targets), encode(pipe, anchors)
    length = t.embeddings.shape[1]
    erase, value = [], []
    for i in range(len(targets)):
        ti, ai = int(t.eot_index[i]) - 1, int(a.eot_index[i]) - 1
        n = 1 if mode == "last" else min(length - ti, length - ai)
        erase.append(t.embeddings[i, ti:ti + n])
        value.append(a.embeddings[i, ai:ai + n])
    return torch.cat(erase).double(), torch.cat(value).double()


def covariance(rows: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
    rows = rows.double()
    return weight * rows.T @ rows
