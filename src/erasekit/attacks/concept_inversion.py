"""Concept inversion, CCE (Pham et al., "Circumventing Concept Erasure Methods For Text-to-Image Generative
Models", ICLR 2024).

Textual inversion against the erased model: one new word (`placeholder`, "<concept>") whose input token embedding
is learned so that the erased model denoises images of the concept, prompted with templates that use the word
("a photo of a <concept>", ...: Ring-A-Bell's templates). The word is never added to the user's tokenizer: its
embedding is put at its position through `encode_token_embeddings`. Images of the concept: `images`, a folder the
user gives (any model), or for a ShapeWorld concept procedural renders of it (`renders` of them). Then each
prompt is generated with the concept word replaced by the learned word (a prompt without it gets the word
appended). Init: the mean of the concept word's token embeddings (its own token for one-token words), or of
`init`'s. Adam lr 5e-3, 200 iterations, a batch of 4 noised latents: CPU-sized for ShapeWorld (the authors train
longer on SD). With a sampling-time edit (GIE, SLD) the learning sees the UNet without it; the final images are
generated with it on.

    attack = ConceptInversion("triangle")                      # ShapeWorld: renders of triangles
    attack = ConceptInversion("van gogh", images="paintings/")  # a real model: the user's images
    result = attack(pipe, ["a red triangle"] * 8, seeds=list(range(8)))
    result.images["concept-inversion"], result.details["embedding"]
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import AttackError
from ..sampling.inversion import encode_images
from ..sampling.trajectory import predict
from ..shapeworld.domain import find_concept
from ..shapeworld.render import scene_images
from ..sampling.images import read_image_folder
from .base import register_attack
from .ring_a_bell import PAIR_TEMPLATES
from .whitebox import (SearchAttack, SoftPrompt, checked, embedding_table, noised, project, real_token_ids,
                       token_layout)


@register_attack
@dataclass
class ConceptInversion(SearchAttack):
    concept: str
    images: str | None = None
    iterations: int = 200
    lr: float = 5e-3
    batch: int = 4
    renders: int = 32
    placeholder: str = "<concept>"
    init: str | None = None
    seed: int = 0
    name = "concept-inversion"

    def concept_latents(self, pipe) -> torch.Tensor:
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        if self.images is not None:
            return encode_images(pipe, read_image_folder(self.images, size))
        try:
            attribute, value = find_concept(self.concept)
        except KeyError:
            value = None
        if value is None or not getattr(pipe, "erasekit_shapeworld", False):
            raise AttackError(f"concept inversion of {self.concept!r} needs images of it: give a folder (images=DIR, "
                              "--images DIR); renders exist only for ShapeWorld concepts on the ShapeWorld model")
        return encode_images(pipe, scene_images(self.renders, self.seed, show={attribute: value.name},
                                                p_empty=None)[1])

    def split(self, text: str) -> list[str]:
        """`text` cut at its "{}" slot, else at its first concept word (one piece: neither is there)."""
        pattern = r"\{\}" if "{}" in text else rf"\b{re.escape(self.concept)}\b"
        return re.split(pattern, text, maxsplit=1, flags=re.IGNORECASE)

    def with_word(self, pipe, text: str) -> SoftPrompt:
        """`text` with the learned word in the slot or instead of the concept word; else appended."""
        parts = self.split(text)
        return SoftPrompt.build(pipe, [parts[0], 1, parts[1]] if len(parts) == 2 else [text, 1],
                                embeddings=self.vector)

    def prepare(self, pipe) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        latents = self.concept_latents(pipe)
        init = pipe.tokenizer(self.init or self.concept, add_special_tokens=False).input_ids
        self.vector = embedding_table(pipe)[init].detach().float().mean(0, keepdim=True).requires_grad_(True)
        templates = [self.with_word(pipe, t.format("{}").strip()) for t in PAIR_TEMPLATES]
        fixed = noised(pipe, latents, generator, self.batch)  # one batch to compare before and after

        def loss_of(x_t, t, target, prompt):
            return F.mse_loss(predict(pipe, x_t, t, prompt.encode(pipe)).float(), target.float())

        with torch.no_grad():
            initial = loss_of(*fixed, templates[0]).item()
        optimiser = torch.optim.Adam([self.vector], lr=self.lr)
        for step in range(self.iterations):
            prompt = templates[int(torch.randint(len(templates), (1,), generator=generator))]
            loss = checked(loss_of(*noised(pipe, latents, generator, self.batch), prompt), self.name, step)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            final = loss_of(*fixed, templates[0]).item()
        self.vector.requires_grad_(False)
        rows = embedding_table(pipe)[real_token_ids(pipe)]
        near = F.cosine_similarity(rows, self.vector.to(rows.dtype), dim=-1).topk(5).indices
        self.summary = {"placeholder": self.placeholder, "norm": self.vector.norm().item(),
                        "nearest_tokens": pipe.tokenizer.convert_ids_to_tokens(real_token_ids(pipe)[near].tolist()),
                        "projected": pipe.tokenizer.convert_ids_to_tokens(project(pipe, self.vector).tolist()),
                        "images": self.images or f"{self.renders} ShapeWorld renders",
                        "loss_initial": initial, "loss_final": final}

    def learned(self) -> dict:
        return {"embedding": self.summary}

    def search(self, pipe, prompt: str, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        parts, soft = self.split(prompt), self.with_word(pipe, prompt)
        with torch.no_grad():
            embeds = soft.encode(pipe)
        return embeds, {"adversarial_prompt": self.placeholder.join(parts) if len(parts) == 2
                        else f"{prompt} {self.placeholder}", **token_layout(soft.ids, soft.positions)}
