"""P4D, Prompting4Debugging (Chin et al., "Prompting4Debugging: Red-Teaming Text-to-Image Diffusion Models by
Finding Problematic Prompts", ICML 2024).

Soft tokens are optimised so that the erased model's prediction under the adversarial prompt matches the original
model's prediction under the target prompt, ‖ε_erased(x_t, adv) − ε_original(x_t, target)‖², over the latents
x_t of the original model's own (guided, DDIM) trajectory for the target prompt, one random step per iteration.
Predictions are compared as the model outputs them (ε, or v for v-prediction models: the same difference up to a
per-step factor √ᾱ_t). As in the paper (which follows PEZ), each iteration's forward pass uses the nearest real
tokens (cosine) and the gradient reaches the soft tokens straight through; every `check_every` iterations the
projected prompt's loss over all the trajectory's steps is measured and the best projected prompt so far is the
result (PEZ and P4D keep the best prompt, not the last).
P4D-N: the adversarial prompt is `tokens` = 16 tokens alone, started at random real tokens. P4D-K: the target
prompt with one token inserted after every k-th word (k = 3 unless `k` is given). Default, as the paper reports
its attack: P4D-UNION (`union=True`), both searched per prompt and an image counted as a success when either
prompt's image shows the concept (settings "p4d-n", "p4d-k3"; `details["union"]` names them). `union=False`
runs one: P4D-N, or P4D-K when `k` is given. Adam lr 0.1 (paper); `iterations` 40 per search by default for the
CPU (the paper runs 3000), `trajectories` seeds of the original's trajectory. With a sampling-time edit (GIE, SLD)
the optimisation sees the UNet without it; the final images are generated with it on.

    attack = P4D("triangle")                  # P4D-UNION; P4D("triangle", union=False) for P4D-N alone
    result = attack(pipe, ["a red triangle"] * 8, seeds=list(range(8)))
    result.images["p4d-n"], result.images["p4d-k3"], result.details["found"]["a red triangle"]["p4d-n"]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..errors import AttackError

from ..models.text import encode
from ..sampling.trajectory import predict, trajectory
from .base import AttackResult, register_attack
from .whitebox import SearchAttack, SoftPrompt, checked, original_model, random_tokens, token_layout, words_of


@register_attack
@dataclass
class P4D(SearchAttack):
    concept: str
    tokens: int = 16
    k: int | None = None
    union: bool = True
    iterations: int = 40
    lr: float = 0.1
    trajectories: int = 2
    check_every: int = 10
    check_batch: int = 16  # latents per UNet call when a check measures the loss over every step
    seed: int = 0
    name = "p4d"

    @property
    def setting(self) -> str:
        if self.union:
            return "p4d-union"
        return "p4d-n" if self.k is None else f"p4d-k{self.k}"

    def branches(self) -> list["P4D"]:
        """The single searches of P4D-UNION: P4D-N and P4D-K."""
        return [replace(self, union=False, k=None), replace(self, union=False, k=self.k or 3)]

    def __call__(self, pipe, prompts: list[str], seeds: list[int], *, before: bool = True) -> AttackResult:
        if not self.union:
            return super().__call__(pipe, prompts, seeds, before=before)
        results = [branch(pipe, prompts, seeds, before=before and i == 0) for i, branch in enumerate(self.branches())]
        settings = [result.details["setting"] for result in results]
        found = {prompt: {"adversarial_prompt": " | ".join(r.details["found"][prompt]["adversarial_prompt"]
                                                             for r in results),
                          **{s: r.details["found"][prompt] for s, r in zip(settings, results)}}
                 for prompt in results[0].details["found"]}
        images = {**results[0].images, **{s: r.images[s] for s, r in zip(settings, results)}}
        return AttackResult(images, {**results[0].details, **dataclasses.asdict(self), "setting": self.setting,
                                     "union": settings, "found": found},
                            {s: r.embeddings[s] for s, r in zip(settings, results)})

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
            target_text = encode(pipe, [prompt]).embeddings
            targets = [predict(pipe, run.latents[k], t, target_text) for k, t in enumerate(run.timesteps)]
        steps = len(run.timesteps)
        latents, every_target = torch.cat([run.latents[k] for k in range(steps)]), torch.cat(targets)
        times = run.timesteps.repeat_interleave(len(seeds))

        def loss_of(k: int):
            adversarial = predict(pipe, run.latents[k], run.timesteps[k], soft.encode(pipe, True))
            return F.mse_loss(adversarial.float(), targets[k].float())

        @torch.no_grad()
        def mean_loss() -> float:  # every step at once, in chunks: one call per chunk, not per step
            embeds, total = soft.encode(pipe, True), 0.0
            for chunk in torch.arange(len(times)).split(self.check_batch):
                adversarial = predict(pipe, latents[chunk], times[chunk], embeds)
                total += (adversarial.float() - every_target[chunk].float()).pow(2).sum().item()
            return total / every_target.numel()

        initial, best_loss, checks = self.optimise(soft, loss_of, mean_loss, steps, generator)
        ids = soft.projected(pipe)
        with torch.no_grad():
            embeds = soft.encode(pipe, True)
        return embeds, {"adversarial_prompt": words_of(pipe, ids), "token_ids": ids[0, soft.positions].tolist(),
                        "loss_initial": initial, "loss_final": best_loss, "checks": checks,
                        **token_layout(ids, soft.positions)}

    def optimise(self, soft: SoftPrompt, loss_of, mean_loss, steps: int, generator: torch.Generator):
        """Adam on the soft tokens, one random trajectory step per iteration; leaves them at the best checked
        projected prompt. (loss at the start, best loss, checks made), losses `mean_loss()`: over all steps."""
        if self.check_every < 1:
            raise AttackError(f"{self.name}: check_every must be at least 1, not {self.check_every}")
        initial = best_loss = mean_loss()
        best, checks = soft.embeddings.detach().clone(), 0
        optimiser = torch.optim.Adam([soft.embeddings], lr=self.lr)
        for step in range(1, self.iterations + 1):
            loss = checked(loss_of(int(torch.randint(steps, (1,), generator=generator))), self.name, step - 1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % self.check_every == 0 or step == self.iterations:
                checks, current = checks + 1, mean_loss()
                if current < best_loss:
                    best_loss, best = current, soft.embeddings.detach().clone()
        with torch.no_grad():
            soft.embeddings.copy_(best)
        return initial, best_loss, checks
