"""GIE as the authors' code runs it, behind named options (issue #17). erasekit's defaults follow the paper's
equations; the official EIUP/GIE code differs in three places. Its prompt-row indexing looks like a slip, but it
produced the paper's numbers, so each difference is one option away.

`GIEConfig.parity_rows` (two-branch parity mode). The authors encode the spliced text P' = P + " " + E as ONE text
(joint encoding J) and align P' with P token by token: E's m tokens are the inserted ones; P' position j ≤ n (SoT
and P's n words) reads P's position j, P''s EoT (position n+m+1) reads P's EoT (n+1), and every later position j
reads P's position j. Branch 1's context and branch 0's copied map are both read through this alignment:
- branch 1's context: J[0…n], E's word rows from Enc(E) at n+1…n+m, J[n+1] at the EoT slot (the joint encoding of
  E's first token: the plain prompt's EoT position, read in J) and J[j] for j ≥ n+m+2 (padding that has seen E).
  Rows 0…n equal Enc(P)'s up to rounding, the text encoder being causal;
- in the copy window, branch 1's P part is Σ_j M0[a(j)] V(ctx1[j]) over P''s non-E positions j, M0 = branch 0's
  attention map (softmax over all L of P's positions), a = the alignment above.
"Dropped", as read here: no position of P' reads P's columns n+2 … n+m+1 (the m padding positions right after P's
EoT; the later padding keeps its own index, so it is not the trailing m that go). Branch 1 simply loses branch 0's
attention mass on those columns: the kept columns carry branch 0's probabilities unchanged and are not
renormalised (they sum to less than 1). erasekit's default instead splices Enc(P)'s rows shifted by m after E (in
the UNet hook: Enc(P) with its last m rows replaced by E's, the same rows in another order), and its P part is
branch 0's output itself (the whole map, nothing dropped). Fast mode has no P' and no branch 0, so the option needs
parity mode. It needs the prompt's text too: the session reads it back from the token ids that the pipeline's text
encoder saw (`session.PromptRecorder`); a call given prompt embeddings instead is refused.

`GIEConfig.parity_schedule`. The authors count window lengths with int(): branch 0's self-attention maps for steps
s < int(self_fraction · T), the cross-attention copy for s < int(cross_fraction · (T + 1)) (their per-step table
has T + 1 entries). erasekit: s < fraction · T, i.e. ceil(fraction · T) steps. 40 % of T is whole exactly when 5
divides T; otherwise the authors' self-attention window is one step shorter (T = 7: 2 steps, erasekit 3). For the
cross window at 0.8 the two rules agree for every T.

The scale adapter's kind (`scale.ScaleAdapter`, `AdapterTraining.kind`, `erasekit gie-adapter --kind`) is the
third difference; it travels with the adapter file, since an adapter is only valid with the features it was fit on.
"""
from __future__ import annotations

import math

import torch

from ...concepts import ConceptError
from ...models import encode


def active_steps(fraction: float, total: int, cross: bool, authors: bool) -> int:
    """How many leading steps of `total` a window of `fraction` covers (cross-attention or self-attention)."""
    if authors:
        return int(fraction * (total + 1 if cross else total))
    return math.ceil(fraction * total)


def alignment(n_prompt: int, n_target: int, length: int) -> torch.Tensor:
    """For each position of P' (length `length`): the position of P whose attention it reads; −1 at E's tokens."""
    return torch.tensor([*range(n_prompt + 1), *[-1] * n_target, n_prompt + 1,
                         *range(n_prompt + n_target + 2, length)])


def joint_contexts(pipe, prompts: list[str], target: str, plain, c_star: torch.Tensor, n_target: int):
    """The authors' branch-1 contexts (n, L, d) and alignments (n, L), from one encoding of each spliced text."""
    joint = encode(pipe, [f"{prompt} {target}" for prompt in prompts], warn=False)
    length = plain.embeddings.shape[1]
    rows, reads = [], []
    for prompt, rows_j, eot, joint_eot in zip(prompts, joint.embeddings, plain.eot_index.tolist(),
                                              joint.eot_index.tolist()):
        n = int(eot) - 1
        if int(joint_eot) != n + n_target + 1:
            raise ConceptError(f"{prompt!r} + {target!r} tokenises to {int(joint_eot) - 1} tokens as one text, not "
                               f"{n} + {n_target}: the authors' rows need the target's tokens unchanged")
        rows.append(torch.cat([rows_j[:n + 1], c_star[1:n_target + 1], rows_j[n + 1:n + 2],
                               rows_j[n + n_target + 2:]]))
        reads.append(alignment(n, n_target, length))
    return torch.stack(rows), torch.stack(reads)


def read_through(probs: torch.Tensor, values: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
    """Σ_j probs[…, read[j]] · values[…, j, :] over the positions j with read[j] ≥ 0: branch 0's map (pairs, heads,
    pixels, L) applied to branch 1's values (pairs, heads, L, d) through the alignments `read` (pairs, L)."""
    index = read.clamp_min(0).to(probs.device)[:, None, None, :].expand(*probs.shape[:3], -1)
    mapped = probs.gather(-1, index) * (read >= 0).to(probs)[:, None, None, :]
    return mapped @ values
