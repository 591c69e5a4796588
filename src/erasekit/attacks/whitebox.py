"""What the attacks that search against the model share: prompts with free (soft) token positions encoded with
gradients, their projection to real vocabulary tokens, the original model beside the edited one (the applied
edits taken off and put back, no copy of the UNet), noised latents of concept images, and `SearchAttack`, the
shape of an attack that searches one adversarial input per distinct prompt and generates from it.

    soft = SoftPrompt.build(pipe, [5, "a red triangle"], init=random_tokens(pipe, 5, generator))
    embeds = soft.encode(pipe, project=True)        # (1, tokens, d), gradients reach soft.embeddings
    with original_model(pipe):                     # every applied edit removed, re-applied on exit
        reference = generate(pipe, "a red triangle", [0, 1])

SD1/SD2-style pipelines only (one text encoder): `encode_token_embeddings` needs it.
"""
from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from ..edits import SamplingTimeEdit, applied_edits
from ..errors import AttackError, NotSupportedError
from ..models.text import encode_token_embeddings
from ..sampling import generate
from ..sampling.sampler import prompt_per_seed
from ..sampling.trajectory import ddim_scheduler
from ..training.losses import denoising_target
from .base import Attack, AttackResult, against


def require_one_encoder(pipe, attack: str) -> None:
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise NotSupportedError(f"{attack} is implemented for SD1/SD2-style pipelines (one text encoder), not SDXL")


def embedding_table(pipe) -> torch.Tensor:
    """The text encoder's input token-embedding matrix (vocabulary, d_token)."""
    return pipe.text_encoder.get_input_embeddings().weight


def real_token_ids(pipe) -> torch.Tensor:
    """Ids of the vocabulary's real tokens: every row of the embedding table the tokenizer can emit, except its
    special tokens (start, end, padding, unknown)."""
    size = min(len(pipe.tokenizer), embedding_table(pipe).shape[0])
    special = set(pipe.tokenizer.all_special_ids)
    return torch.tensor([i for i in range(size) if i not in special])


def random_tokens(pipe, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` real token ids drawn uniformly (with replacement) with `generator`."""
    ids = real_token_ids(pipe)
    return ids[torch.randint(len(ids), (count,), generator=generator)]


@torch.no_grad()
def project(pipe, soft: torch.Tensor, metric: str = "cosine") -> torch.Tensor:
    """The nearest real token id to each soft embedding (…, d) on the token-embedding matrix, by cosine
    similarity or L2 distance; special tokens are never chosen."""
    ids = real_token_ids(pipe).to(soft.device)
    rows = embedding_table(pipe)[ids].to(soft.dtype)
    flat = soft.reshape(-1, soft.shape[-1])
    if metric == "cosine":
        scores = F.normalize(flat, dim=-1) @ F.normalize(rows, dim=-1).T
    elif metric == "l2":
        scores = -torch.cdist(flat, rows)
    else:
        raise ValueError(f"unknown projection metric {metric!r} (cosine or l2)")
    return ids[scores.argmax(dim=-1)].reshape(soft.shape[:-1])


@dataclass
class SoftPrompt:
    """A tokenized prompt some of whose positions are free: `ids` (1, max_length) as the encoder reads them (free
    positions hold their current real token), `positions` of the free ones, `embeddings` (free, d) to optimise."""
    ids: torch.Tensor
    positions: torch.Tensor
    embeddings: torch.Tensor

    @classmethod
    def build(cls, pipe, pieces: list, init: torch.Tensor | None = None,
              embeddings: torch.Tensor | None = None) -> "SoftPrompt":
        """`pieces`: text (tokenized without start/end tokens) and whole numbers (that many free positions), in
        order. The free positions start at the embeddings of the token ids `init`, or at the given `embeddings`
        (a leaf that several prompts may share, as a learned word is); `ids` hold their nearest real tokens."""
        tokenizer = pipe.tokenizer
        body, positions = [], []
        for piece in pieces:
            if isinstance(piece, int):
                positions += range(len(body) + 1, len(body) + 1 + piece)
                body += [0] * piece  # set below to the free rows' nearest real tokens
            elif piece.strip():
                body += tokenizer(piece.strip(), add_special_tokens=False).input_ids
        limit = tokenizer.model_max_length
        if len(body) + 2 > limit:
            raise AttackError(f"{len(positions)} adversarial tokens and {len(body) - len(positions)} prompt tokens "
                              f"do not fit the tokenizer's {limit} (start and end tokens included): use fewer "
                              "tokens or a shorter prompt")
        ids = torch.tensor([[tokenizer.bos_token_id, *body, tokenizer.eos_token_id]
                            + [tokenizer.pad_token_id] * (limit - len(body) - 2)])
        positions = torch.tensor(positions, dtype=torch.long)
        if embeddings is None:
            embeddings = embedding_table(pipe)[init].detach().clone().float().requires_grad_(True)
        ids[0, positions] = project(pipe, embeddings.detach())
        return cls(ids, positions, embeddings)

    def token_inputs(self, pipe, project_to_vocabulary: bool = False) -> torch.Tensor:
        """(1, tokens, d) input embeddings with the free rows inserted; projected, the forward pass sees the
        nearest real tokens and the gradient passes straight through to the soft rows (PEZ, Wen et al. 2023)."""
        table = embedding_table(pipe)
        free = self.embeddings.to(table.dtype)
        if project_to_vocabulary:
            free = free + (table[project(pipe, free)] - free).detach()
        rows = table[self.ids[0]].detach().clone()
        rows[self.positions] = free
        return rows[None]

    def encode(self, pipe, project_to_vocabulary: bool = False) -> torch.Tensor:
        """What the UNet's cross-attention receives for this prompt (1, tokens, d_text), with gradients."""
        return encode_token_embeddings(pipe, self.ids, self.token_inputs(pipe, project_to_vocabulary))

    def projected(self, pipe) -> torch.Tensor:
        """The ids (1, tokens) with the free positions set to the nearest real tokens."""
        ids = self.ids.clone()
        ids[0, self.positions] = project(pipe, self.embeddings.detach())
        return ids


def encode_ids(pipe, ids: torch.Tensor) -> torch.Tensor:
    """Encoder output for token ids as they are (no re-tokenizing of decoded text, which BPE may not round-trip)."""
    with torch.no_grad():
        return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]


def token_layout(ids: torch.Tensor, free) -> dict:
    """What `found` records of an adversarial input's tokens: every id (1, tokens) and the free positions, so a
    defence (hardening) can tell the adversarial rows of the encoder output from the prompt's own."""
    return {"ids": ids.flatten().tolist(), "free": [int(p) for p in free]}


def words_of(pipe, ids: torch.Tensor) -> str:
    """The text of a row of ids, special tokens left out."""
    return pipe.tokenizer.decode(ids.flatten().tolist(), skip_special_tokens=True)


@contextmanager
def without_edits(pipe, keep=lambda edit: False):
    """Take off the applied edits that `keep` rejects (all of them by default: the original model), restore
    them on exit, in their order. Weight deltas restore the very original tensors, so this copies no UNet and
    the original's predictions are bit-identical to those before the edits were applied."""
    stack = list(applied_edits(pipe))
    if all(keep(edit) for edit in stack):
        yield pipe
        return
    for edit in reversed(stack):
        edit.remove(pipe)
    kept = [edit for edit in stack if keep(edit)]
    try:
        for edit in kept:
            edit.apply(pipe)
        yield pipe
    finally:
        for edit in reversed(kept):
            edit.remove(pipe)
        for edit in stack:
            edit.apply(pipe)


def original_model(pipe):
    """The original model for the duration of the `with` block (every applied edit taken off, then put back)."""
    return without_edits(pipe)


def plain_unet(pipe):
    """The UNet as the optimisation sees it: weight and adapter edits kept, sampling-time edits (GIE, SLD) taken
    off, since they act on the sampler's guided batch; the final images are made with them on, by `generate`."""
    return without_edits(pipe, keep=lambda edit: not isinstance(edit, SamplingTimeEdit))


@contextmanager
def frozen(pipe):
    """No gradients to the model's own weights while soft tokens are optimised (restored on exit)."""
    modules = [m for m in (pipe.unet, pipe.text_encoder, pipe.vae) if m is not None]
    saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def noised(pipe, latents: torch.Tensor, generator: torch.Generator, batch: int):
    """(x_t, t, target): `batch` latents drawn from `latents`, noised at uniform random training timesteps with
    the pipeline's schedule, and what the model should predict there (ε or v, `denoising_target`)."""
    scheduler = ddim_scheduler(pipe, 1)
    pick = torch.randint(len(latents), (batch,), generator=generator)
    x0 = latents[pick.to(latents.device)]
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    t = torch.randint(scheduler.config.num_train_timesteps, (batch,), generator=generator).to(x0.device)
    return scheduler.add_noise(x0, noise, t), t, denoising_target(scheduler, x0, noise, t)


def checked(loss: torch.Tensor, attack: str, step: int) -> torch.Tensor:
    """The loss, or an AttackError when it is NaN or infinite."""
    if not math.isfinite(loss.item()):
        raise AttackError(f"{attack}: the loss became {loss.item()} at iteration {step}; try a lower learning rate")
    return loss


class SearchAttack(Attack):
    """An attack that searches one adversarial input per distinct prompt (`search`, with a generator seeded
    from the attack's seed and the prompt's rank) and generates every seed's image from its prompt's input.
    Subclasses are dataclasses: their fields are the settings recorded in `details`. Images come under
    "before" (the prompts as given, the pre-attack rate) and under the attack's `setting`."""
    name: ClassVar[str] = "abstract-search"

    @property
    def setting(self) -> str:
        return self.name

    def prepare(self, pipe) -> None:
        """Work shared by all prompts (before any search; the model as `search` sees it)."""

    def learned(self) -> dict:
        """What `prepare` learned, for `details`."""
        return {}

    def search(self, pipe, prompt: str, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """(encoder output (1, tokens, d) to generate from, what was found: adversarial prompt, losses, and
        `token_layout`'s ids and free positions)."""
        raise NotImplementedError

    def __call__(self, pipe, prompts: list[str], seeds: list[int], *, before: bool = True) -> AttackResult:
        """`before=False`: no "before" images (a union's later searches share its first one's)."""
        require_one_encoder(pipe, self.name)
        prompts = prompt_per_seed(prompts, seeds)
        inputs, found = {}, {}
        with frozen(pipe), plain_unet(pipe):
            self.prepare(pipe)
            for rank, prompt in enumerate(dict.fromkeys(prompts)):
                generator = torch.Generator().manual_seed(self.seed * 1_000_003 + rank)
                inputs[prompt], found[prompt] = self.search(pipe, prompt, generator)
        details = {"attack": self.name, "setting": self.setting, **dataclasses.asdict(self),
                   "against": against([edit.metadata for edit in applied_edits(pipe)]), **self.learned(),
                   "found": found}
        embeds = torch.cat([inputs[p] for p in prompts])
        images = {"before": generate(pipe, prompts, seeds, progress=False)} if before else {}
        images[self.setting] = generate(pipe, None, seeds, prompt_embeds=embeds, progress=False)
        return AttackResult(images, details, {self.setting: inputs})
