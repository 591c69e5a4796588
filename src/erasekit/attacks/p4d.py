"""P4D, Prompting4Debugging (Chin et al., "Prompting4Debugging: Red-Teaming Text-to-Image Diffusion Models by
Finding Problematic Prompts", ICML 2024).

Soft tokens are optimised so that the erased model's prediction under the adversarial prompt matches the original
model's prediction under the target prompt, ‖ε_erased(x_t, adv) − ε_original(x_t, target)‖², over the latents
x_t of the original model's own (guided, DDIM) trajectory for the target prompt, one random step per iteration.
Predictions are compared as the model outputs them (ε, or v for v-prediction models: the same difference up to a
per-step factor √ᾱ_t). As in the paper (which follows PEZ), each iteration's forward pass uses the nearest real
tokens (cosine) and the gradient reaches the soft tokens straight through; the result is the projected prompt.
P4D-N (default): the adversarial prompt is `tokens` = 16 tokens alone. P4D-K (`k=3`): the target prompt with one
token inserted after every k-th word. Adam lr 0.1 (paper); `iterations` 40 by default for the CPU (the paper runs
more), `trajectories` seeds of the original's trajectory. With a sampling-time edit (GIE, SLD) the optimisation
sees the UNet without it; the final images are generated with it on.

    attack = P4D("triangle")                  # P4D-N; P4D("triangle", k=3) for P4D-K
    result = attack(pipe, ["a red triangle"] * 8, seeds=list(range(8)))
    result.images["p4d-n"], result.details["found"]["a red triangle"]["adversarial_prompt"]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.text import encode
from ..sampling.trajectory import predict, trajectory
from .base import register_attack
from .whitebox import SearchAttack, SoftPrompt, checked, original_model, random_tokens, words_of


@register_attack
@dataclass
class P4D(SearchAttack):
    concept: str
    tokens: int = 16
    k: int | None = None
    iterations: int = 40
    lr: float = 0.1
    trajectories: int = 2
    seed: int = 0
    name = "p4d"

    @property
    def setting(self) -> str:
        return "p4d-n" if self.k is None else f"p4d-k{self.k}"

    def pieces(self, prompt: str) -> list:
        """P4D-N: the free tokens alone; P4D-K: the prompt's words with one free token after every k-th."""
        if self.k is None:
            return [self.tokens]
        words = prompt.split()
        chunks = [" ".join(words[i:i + self.k]) for i in range(0, len(words), self.k)]
        pieces = [piece for chunk in chunks for piece in (chunk, 1)]
        return pieces if len(words) % self.k == 0 or len(words) < self.k else pieces[:-1]

    def search(self, pipe, prompt: str, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        pieces = self.pieces(prompt)
        free = sum(p for p in pieces if isinstance(p, int))
        soft = SoftPrompt.build(pipe, pieces, init=random_tokens(pipe, free, generator))
        seeds = torch.randint(2**31 - 1, (self.trajectories,), generator=generator).tolist()
        with original_model(pipe), torch.no_grad():
            run = trajectory(pipe, prompt, seeds, keep="all")
            steps = run.timesteps
            target_text = encode(pipe, [prompt]).embeddings
            targets = [predict(pipe, run.latents[k], steps[k], target_text) for k in range(len(steps))]

        def loss_of(k: int):
            adversarial = predict(pipe, run.latents[k], steps[k], soft.encode(pipe, True))
            return F.mse_loss(adversarial.float(), targets[k].float())

        with torch.no_grad():
            initial = sum(loss_of(k).item() for k in range(len(steps))) / len(steps)
        optimiser = torch.optim.Adam([soft.embeddings], lr=self.lr)
        for step in range(self.iterations):
            k = int(torch.randint(len(steps), (1,), generator=generator))
            loss = checked(loss_of(k), self.name, step)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        ids = soft.projected(pipe)
        with torch.no_grad():
            final = sum(loss_of(k).item() for k in range(len(steps))) / len(steps)
            embeds = soft.encode(pipe, True)
        return embeds, {"adversarial_prompt": words_of(pipe, ids), "token_ids": ids[0, soft.positions].tolist(),
                        "loss_initial": initial, "loss_final": final}
