"""GIE's splicing: the erase target E's encoding and branch 1's context P' (E's words before P's EoT).

Cross-attention has no positional encoding: its output does not depend on the order of the context rows. The
paper's P' (P's SoT and words, E's n words from Enc(E), then P's EoT and padding shifted by n, the last n rows
dropped) holds the same rows as Enc(P) with its LAST n rows replaced by E's n word rows. So branch 1's context is
made from the context alone (`tail_splice`), without the prompt's text: it works for SD1/SD2/SDXL, image-to-image
and prompt embeddings from attacks alike. `splice` builds P' from the text, in the paper's order (the reference the
tail form is tested against)."""
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
        check_fit(prompt, n_prompt, target, n_target, length)
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


def encode_keep(pipe, words: list[str]) -> tuple[torch.Tensor, list[int]]:
    """The keep words' rows, encoded together as one text (rows in context, as a prompt's words are; each word
    encoded alone spared the shapes less: ShapeWorld lost the shape in 6/160 style images, together 0/160):
    (rows (K, d), their positions 1…K). Refuses words that do not fit the encoder's context."""
    if not words:
        return torch.zeros(0), []
    text = " ".join(words)
    keep = encode(pipe, [text], warn=False)
    eot, length = int(keep.eot_index[0]), keep.embeddings.shape[1]
    if eot <= 1:
        raise ConceptError(f"keep words {list(words)} tokenise to nothing")
    n_tokens = len(pipe.tokenizer(text, verbose=False).input_ids) - 2
    if n_tokens > length - 2:
        raise ConceptError(f"the keep words take {n_tokens} tokens; the text encoder fits {length - 2}")
    return keep.embeddings[0, 1:eot], list(range(1, eot))


def check_fit(prompt: str, n_prompt: int, target: str, n_target: int, length: int) -> None:
    """Refuse a prompt of `n_prompt` words after which E's `n_target` words do not fit before the length limit."""
    room = length - 2 - n_prompt
    if n_target > room:
        raise ConceptError(f"erase target {target!r} needs {n_target} tokens but only {max(room, 0)} fit "
                           f"after the prompt {prompt!r} (limit {length})")


def tail_splice(context: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Branch 1's context: `context` (rows, L, d) with its last n rows replaced by E's n word rows `words` (n, d);
    P' up to the order of its rows (see the module's docstring)."""
    words = words.to(context)[None].expand(context.shape[0], -1, -1)
    return torch.cat([context[:, :context.shape[1] - words.shape[1]], words], dim=1)


def tail_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    """The cross-attention mask (rows, L) of `tail_splice`'s context: E's n rows are attended."""
    return torch.cat([mask[:, :mask.shape[1] - n], torch.ones_like(mask[:, :n])], dim=1)
