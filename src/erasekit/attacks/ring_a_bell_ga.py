"""Ring-A-Bell, discrete form (Tsai et al., "Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion
Models?", ICLR 2024): a genetic search over real tokens for a prompt whose text embedding matches the attacked
embedding Enc(prompt) + η·v of the embedding form (`RingABell.concept_vector`); fitness = cosine similarity of
the candidate's whole encoder output to it. Reported apart from the embedding form (`RingABell`).
Each generation keeps the `elite` fittest, breeds the rest from the fitter half by one-point crossover, and
replaces each child token with a random one with probability `mutation`. Paper: population 200, η = 3 (nudity),
16 tokens; here population 64 and 30 generations by default for the CPU (expose more). Black-box on the UNet: it
reads only the text encoder, so any applied edit acts only when the final prompt is generated.

    attack = RingABellGA("triangle", population=200, generations=100)
    result = attack(pipe, ["a red shape"] * 8, seeds=list(range(8)))
    result.images["ring-a-bell-ga"], result.details["found"]["a red shape"]["adversarial_prompt"]
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import AttackError
from ..models.text import encode
from .base import register_attack
from .ring_a_bell import RingABell
from .whitebox import SearchAttack, SoftPrompt, encode_ids, real_token_ids, token_layout, words_of


def similarity(embeddings: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each row's whole encoder output (tokens × width, flattened) to the target's."""
    return F.cosine_similarity(embeddings.flatten(1), target.flatten(1), dim=-1)


@register_attack
@dataclass
class RingABellGA(SearchAttack):
    concept: str
    strength: float = 3.0
    tokens: int = 16
    population: int = 64
    generations: int = 30
    elite: int = 4
    mutation: float = 0.1
    seed: int = 0
    name = "ring-a-bell-ga"

    def prepare(self, pipe) -> None:
        self.vector = RingABell(self.concept).concept_vector(pipe)

    def fitness(self, pipe, ids: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return similarity(encode_ids(pipe, ids), target)

    def search(self, pipe, prompt: str, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        if not 0 <= self.elite < self.population:
            raise AttackError(f"{self.name}: the elite ({self.elite}) must be smaller than the population "
                              f"({self.population})")
        plain = encode(pipe, [prompt]).embeddings
        target = plain + self.strength * self.vector
        template = SoftPrompt.build(pipe, [self.tokens], init=torch.zeros(self.tokens, dtype=torch.long)).ids
        vocabulary, slots = real_token_ids(pipe), slice(1, 1 + self.tokens)
        population = template.repeat(self.population, 1)
        population[:, slots] = vocabulary[torch.randint(len(vocabulary), (self.population, self.tokens),
                                                        generator=generator)]
        for _ in range(self.generations):
            population = population[self.fitness(pipe, population, target).argsort(descending=True)]
            children = self.population - self.elite
            fitter = population[: max(2, self.population // 2), slots]
            a, b = (fitter[torch.randint(len(fitter), (children,), generator=generator)] for _ in range(2))
            cut = torch.randint(1, self.tokens + 1, (children, 1), generator=generator)
            child = torch.where(torch.arange(self.tokens) < cut, a, b)
            mutate = torch.rand(child.shape, generator=generator) < self.mutation
            child[mutate] = vocabulary[torch.randint(len(vocabulary), (int(mutate.sum()),), generator=generator)]
            population[self.elite:, slots] = child
        scores = self.fitness(pipe, population, target)
        best = population[scores.argmax()][None]
        return encode_ids(pipe, best), {"adversarial_prompt": words_of(pipe, best),
                                        "token_ids": best[0, slots].tolist(), "fitness": scores.max().item(),
                                        "prompt_fitness": similarity(plain, target).item(),
                                        **token_layout(best, range(slots.start, slots.stop))}
