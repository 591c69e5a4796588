"""GIE's splicing: the erase target E's encoding and the spliced prompt P' (E's words before P's EoT)."""
from __future__ import annotations

import torch

from ...concepts import ConceptError
from ...models import encode


def splice(pipe, prompt: str, target: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(P' embedding (L, d), Enc(E) (L, d), positions of E's tokens in P'). P's SoT and words keep Enc(P)'s rows,
    E's words take Enc(E)'s rows, and P's EoT and padding follow, shifted."""
    spliced, c_star, positions = splice_many(pipe, [prompt], target)
    return spliced[0], c_star, positions[0]


def splice_many(pipe, prompts: list[str], target: str, plain=None):
    """`splice` for several prompts with one text-encoder call each for P and E; `plain`: encode(pipe, prompts)
    when the caller has it already. Returns (P' embeddings (n, L, d), Enc(E) (L, d), E's positions per prompt)."""
    plain = plain if plain is not None else encode(pipe, prompts)
    c_star, n_target = encode_target(pipe, target)
    length = plain.embeddings.shape[1]
    rows, positions = [], []
    for prompt, c0, eot in zip(prompts, plain.embeddings, plain.eot_index.tolist()):
        n_prompt = int(eot) - 1
        room = length - 2 - n_prompt
        if n_target > room:
            raise ConceptError(f"erase target {target!r} needs {n_target} tokens but only {max(room, 0)} fit "
                               f"after the prompt {prompt!r} (limit {length})")
        rows.append(torch.cat([c0[:n_prompt + 1], c_star[1:n_target + 1], c0[n_prompt + 1:length - n_target]]))
        positions.append(list(range(n_prompt + 1, n_prompt + 1 + n_target)))
    return torch.stack(rows), c_star, positions


def encode_target(pipe, target: str) -> tuple[torch.Tensor, int]:
    """(Enc(E) (L, d), number of E's word tokens); refuses a target that tokenises to nothing."""
    star = encode(pipe, [target], warn=False)
    n = int(star.eot_index[0]) - 1
    if n == 0:
        raise ConceptError(f"erase target {target!r} tokenises to nothing")
    return star.embeddings[0], n
