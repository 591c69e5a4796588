"""erasekit's selective reading for the Safe Adapter (not in the paper): the directions of the text rows along which
the pool's target prompts carry most energy against its benign prompts, the empty prompt and a caption list.

Why: the adapter and its LoRA are linear in the text rows, and the rows of every prompt share most of their
energy, so whatever the policy gradient teaches them for the target prompts it also applies to the benign prompts
and to classifier-free guidance's empty prompt — measured on ShapeWorld, the reward alone broke the model (FD
830–985) and a term holding the original's outputs held the erasure back too. Read through m such directions,
rows without a component there pass unchanged. On ShapeWorld's triangle pool one direction reads the bench's target
prompts at rms 13 (as large as whole rows), the other shapes' prompts at 0.7, the bench's FD scenes at 0.9 and the
empty prompt at 0.7 (README, ForceForget)."""
from __future__ import annotations

import torch

from ...closed_form.directions import discriminative_directions, second_moment
from ...closed_form.prior import caption_list, caption_prior
from ...models import encode


def reader(pipe, pool, dims: int, targets: list[str]) -> torch.Tensor:
    """(d, dims): every position's row of the target prompts against, half and half, the benign prompts' and the
    empty prompt's, and the caption prior's (the closed-form edits' captions without the `targets`: the pool's few
    frames alone left ShapeWorld's bench scenes read 5× more than its benign prompts); each direction scaled so
    that the target rows read along it are as large (rms) as the whole rows: an adapter reading them then moves as
    far per learning-rate step as one reading the whole row."""
    def rows(texts):
        out = encode(pipe, texts, warn=False).embeddings
        return out.reshape(-1, out.shape[-1]).float()
    target, benign = rows([p.text for p in pool if p.harmful]), rows([p.text for p in pool if not p.harmful] + [""])
    c2, tokens = caption_prior(pipe, caption_list(pipe, targets))
    directions = discriminative_directions(second_moment(target), (second_moment(benign) + c2 / tokens) / 2, dims)
    read = (target @ directions).pow(2).mean(0).sqrt()
    return directions * (target.pow(2).sum(-1).mean().sqrt() / read)
