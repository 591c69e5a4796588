"""UnlearnDiffAtk (Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy To
Generate Unsafe Images ... For Now", ECCV 2024).

White-box on the erased model: `tokens` adversarial tokens are prefixed to the prompt and optimised so that the
erased model denoises noised images of the concept well, i.e. its denoising loss (ε or v, as the model predicts)
on x_t = add_noise(x_0, ε, t), random t, is minimal. The concept images are the original model's generations
for the prompt (the applied edits taken off while they are made). The authors optimise in token space with
projection: here every iteration's forward pass uses the nearest real tokens (cosine on the token-embedding
matrix) and the gradient passes straight through to the soft tokens (PEZ); the result is the projected prompt.
Defaults are the authors': 5 prefix tokens, Adam lr 0.01, 40 iterations; `concept_images` images and a batch of
`batch` noised latents per iteration are this implementation's CPU-sized choices. With a sampling-time edit
(GIE, SLD) the optimisation sees the UNet without it; the final images are generated with it on.

    attack = UnlearnDiffAtk("triangle")
    result = attack(pipe, ["a red triangle"] * 8, seeds=list(range(8)))
    result.images["unlearndiffatk"], result.details["found"]["a red triangle"]["adversarial_prompt"]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..sampling import generate
from ..sampling.inversion import encode_images
from ..sampling.trajectory import predict
from .base import register_attack
from .whitebox import (SearchAttack, SoftPrompt, checked, noised, original_model, random_tokens, token_layout,
                       words_of)


@register_attack
@dataclass
class UnlearnDiffAtk(SearchAttack):
    concept: str
    tokens: int = 5
    iterations: int = 40
    lr: float = 0.01
    concept_images: int = 4
    batch: int = 4
    seed: int = 0
    name = "unlearndiffatk"

    def search(self, pipe, prompt: str, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        soft = SoftPrompt.build(pipe, [self.tokens, prompt], init=random_tokens(pipe, self.tokens, generator))
        image_seeds = torch.randint(2**31 - 1, (self.concept_images,), generator=generator).tolist()
        with original_model(pipe):
            latents = encode_images(pipe, generate(pipe, prompt, image_seeds, progress=False))
        fixed = noised(pipe, latents, generator, self.batch)  # one batch to compare before and after

        def loss_of(x_t, t, target, project=True):
            return F.mse_loss(predict(pipe, x_t, t, soft.encode(pipe, project)).float(), target.float())

        with torch.no_grad():
            initial = loss_of(*fixed).item()
        optimiser = torch.optim.Adam([soft.embeddings], lr=self.lr)
        for step in range(self.iterations):
            loss = checked(loss_of(*noised(pipe, latents, generator, self.batch)), self.name, step)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        ids = soft.projected(pipe)
        with torch.no_grad():
            final = loss_of(*fixed).item()
            embeds = soft.encode(pipe, True)
        return embeds, {"adversarial_prompt": words_of(pipe, ids), "token_ids": ids[0, soft.positions].tolist(),
                        "loss_initial": initial, "loss_final": final, **token_layout(ids, soft.positions)}
