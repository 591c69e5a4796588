"""One look at the model as it stands in a round: each attack's success rate (on the round's own attack and image
seeds) with the adversarial inputs that brought the concept back, and preservation on a validation set."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..attacks import build_attack
from ..evaluation.prompts import shapeworld_sets
from ..evaluation.redteam import attack_prompts, successes
from ..evaluation.scoring import score_shapeworld
from ..sampling import generate
from .config import HardenConfig


@dataclass
class Adversarial:
    """An input that still shows the concept: the encoder output (L, d), its token ids (L,) and free positions."""
    embeddings: torch.Tensor
    ids: list[int]
    free: list[int]


@dataclass
class AttackRun:
    attack: str
    hits: int
    n: int
    seconds: float
    found: list[Adversarial] = field(default_factory=list, repr=False)

    @property
    def rate(self) -> float:
        return self.hits / self.n


def run_attack(pipe, name: str, concept: str, detector, config: HardenConfig, round_: int,
               prompts: list[str] | None = None) -> AttackRun:
    """Attack `concept` `config.restarts` times on round `round_`'s seeds; pool the hits and keep the inputs of
    every prompt whose image shows it."""
    prompts = prompts or attack_prompts(concept, 4)  # four distinct prompts naming the concept, cycled
    prompts = [prompts[i % len(prompts)] for i in range(config.images)]
    runs = [attack_run(pipe, name, concept, detector, config, prompts, index)
            for index in run_indices(config, round_)]
    return AttackRun(name, sum(r.hits for r in runs), sum(r.n for r in runs), sum(r.seconds for r in runs),
                     [f for r in runs for f in r.found])


def attack_run(pipe, name: str, concept: str, detector, config: HardenConfig, prompts: list[str],
               index: int) -> AttackRun:
    """The loop's `index`-th run of attack `name`, on that run's seeds."""
    attack_seed, seeds = run_seeds(config, index)
    attack = build_attack(name, concept, **{**config.attack_options.get(name, {}), "seed": attack_seed})
    t = time.perf_counter()
    result = attack(pipe, prompts, seeds)
    shown, _, _ = successes(result, detector)
    found = [item for setting in result.details.get("union") or [result.details["setting"]]
             for item in successful(result, setting, prompts, detector)]
    return AttackRun(name, int(shown.sum()), len(seeds), time.perf_counter() - t, found)


def run_indices(config: HardenConfig, round_: int) -> range:
    """The loop's run indices in round `round_`: one per restart, every run's seeds its own."""
    return range(round_ * config.restarts, (round_ + 1) * config.restarts)


def run_seeds(config: HardenConfig, index: int) -> tuple[int, list[int]]:
    """The `index`-th run's attack seed (`seed + index`) and image seeds (its own block from `image_seed`)."""
    start = config.image_seed + index * config.images
    return config.seed + index, list(range(start, start + config.images))


def successful(result, setting: str, prompts: list[str], detector) -> list[Adversarial]:
    """The adversarial inputs of `setting` whose images show the concept for at least one seed."""
    shown = detector.present(result.images[setting]).bool().tolist()
    hit = {p for p, s in zip(prompts, shown) if s}
    out = []
    for prompt in dict.fromkeys(prompts):
        if prompt in hit:
            found = result.details["found"][prompt]
            layout = found.get(setting, found)  # P4D-UNION keeps each setting's find under its name
            out.append(Adversarial(result.embeddings[setting][prompt][0], layout["ids"], layout["free"]))
    return out


def shapeworld_preservation(concept: str, config: HardenConfig, classifier=None):
    """pipe → accuracy on the attribute's other values (the bench's "other" set, on validation seeds of its own)."""
    return shapeworld_check(concept, config, "other", "accuracy", classifier)


def shapeworld_benign(concept: str, config: HardenConfig, classifier=None):
    """pipe → the share of the explicit target prompts' other attributes (colour, background, …) still drawn: what
    erasing the concept must leave (the bench's `benign_kept`, on validation seeds of its own)."""
    return shapeworld_check(concept, config, "explicit", "benign_kept", classifier)


def shapeworld_check(concept: str, config: HardenConfig, set_name: str, key: str, classifier=None):
    attribute, sets = shapeworld_sets(concept, config.validation_seeds)
    items = sets[set_name]
    for item in items:
        item.seed += config.validation_seed

    def check(pipe) -> float:
        images = generate(pipe, [i.prompt for i in items], [i.seed for i in items], progress=False)
        return score_shapeworld(images, items, set_name, attribute, classifier)[key]
    return check
