"""The attack interface."""
from __future__ import annotations

from dataclasses import dataclass, field

ATTACKS: dict[str, type["Attack"]] = {}


def register_attack(cls: type["Attack"]) -> type["Attack"]:
    ATTACKS[cls.name] = cls
    return cls


@dataclass
class AttackResult:
    """Images per attack setting (e.g. per strength η), same order as the prompts and seeds given."""
    images: dict[str, list] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # the attack's settings and what it found (for the protocol)


class Attack:
    name = "abstract"

    def __call__(self, pipe, prompts: list[str], seeds: list[int]) -> AttackResult:
        raise NotImplementedError
