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


# Generic frames for `context_rows` when a spec brings no templates of its own: no domain words, none of the
# phrasings the held-out evaluation uses; some with words after the concept (whose rows carry it too), some
# that name a style.
CONTEXT_TEMPLATES = ("{}", "a {}", "the {}", "a photo of a {}", "a drawing of a {}", "a {} shape", "a {} in a scene",
                     "a {} on a canvas", "art by {}", "a painting by {}", "a drawing in the style of {}")


def fill(template: str, concept: str) -> str:
    return " ".join(template.format(concept).split())


def _concept_span(pipe, template: str, concept: str) -> tuple[int, int]:
    """(first position, token count) of `concept` inside the filled template (SoT at position 0)."""
    prefix = fill(template.split("{}")[0] + "{}", "")
    return 1 + word_count(pipe, prefix), word_count(pipe, concept)


def context_rows(pipe, targets: list[str], anchors: list[str], templates) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-aligned (erase, value) embeddings of each target inside each template, from the target's first token
    through the end of the sequence: a causal text encoder carries the concept into every later row (EoT, padding,
    the words after it), so editing the concept's own rows leaves it in the rest. The values are the same template
    with the anchor in its place: the concept's rows map to the anchor's (an empty anchor: the row before the
    concept), the rows after it to the rows after the anchor."""
    filled = [(fill(t, c), fill(t, a), t, c, a) for c, a in zip(targets, anchors) for t in templates]
    if any(word_count(pipe, c) == 0 for c in targets):
        raise ConceptError(f"a concept of {targets!r} tokenises to nothing")
    t_enc = encode(pipe, [f[0] for f in filled], warn=False).embeddings
    a_enc = encode(pipe, [f[1] for f in filled], warn=False).embeddings
    length = t_enc.shape[1]
    erase, value = [], []
    for i, (_, _, template, concept, anchor) in enumerate(filled):
        start, k = _concept_span(pipe, template, concept)
        if start + k > length:
            continue  # the concept is cut off by the tokenizer's length
        ka = word_count(pipe, anchor) if anchor.strip() else 0
        source = [start + min(j, ka - 1) if ka else start - 1 for j in range(k)]
        n = length - start - max(k, ka)
        erase += [t_enc[i, start:start + k], t_enc[i, start + k:start + k + n]]
        value += [a_enc[i, source], a_enc[i, start + ka:start + ka + n]]
    if not erase:
        raise ConceptError(f"{targets!r} does not fit in the tokenizer's {length} positions in any template")
    return torch.cat(erase).double(), torch.cat(value).double()


def adversarial_rows(adversarial: torch.Tensor, reference: torch.Tensor, free,
                     anchor: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-aligned (erase, value) rows of an attack's input: `adversarial` (L, d) is the encoder output of a prompt
    with adversarial tokens at the positions `free`, `reference` (L, d) that of the same prompt with each run of
    free tokens replaced by `anchor` tokens (0: left out; its other tokens in order, then padding). Every row from
    the first free position to the end is erased (a causal encoder carries the adversarial tokens into all later
    rows); a prompt token's row maps to the same token's row in the reference, a free token's row to the anchor's
    row at its place in the run (the last anchor row past its length) or, without an anchor, to the reference row
    before it (as `context_rows` maps a concept to its anchor)."""
    free = {int(p) for p in free}
    if not free:
        raise ValueError("an adversarial input needs at least one free position")
    start, source, k, run = min(free), [], min(free), 0  # k: the next reference row; run: place in a free run
    for j in range(start, adversarial.shape[0]):
        if j in free:
            source.append(k + min(run, anchor - 1) if anchor else k - 1)
            run += 1
            continue
        k, run = k + (anchor if run else 0), 0
        source.append(k)
        k += 1
    last = reference.shape[0] - 1  # an anchor longer than its run pushes the reference's tail out
    return adversarial[start:].double(), reference[[min(i, last) for i in source]].double()


def pushed(value: torch.Tensor, erase: torch.Tensor, eta: float) -> torch.Tensor:
    """Value rows moved past the anchor, away from the rows they replace: a − η(c − a) (η = 0: the anchor)."""
    return value - eta * (erase - value)


def all_rows(pipe, texts: list[str]) -> torch.Tensor:
    """Every token row (SoT, words, EoT, padding) of each text."""
    rows = encode(pipe, texts, warn=False).embeddings.double()
    return rows.reshape(-1, rows.shape[-1])
