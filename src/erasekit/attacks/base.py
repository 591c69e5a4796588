"""The attack interface."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from ..errors import ErasekitError

ATTACKS: dict[str, type["Attack"]] = {}


def register_attack(cls: type["Attack"]) -> type["Attack"]:
    ATTACKS[cls.name] = cls
    return cls


@dataclass
class AttackResult:
    """Images per attack setting (e.g. per strength η), same order as the prompts and seeds given."""
    images: dict[str, list] = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # the attack's settings and what it found (for the protocol)
    # setting → prompt → the encoder output (1, tokens, d) the images of that prompt were generated from (the
    # searching attacks); `details["found"][prompt]` names its token "ids" and the "free" (adversarial) positions
    embeddings: dict[str, dict] = field(default_factory=dict, repr=False)


class Attack:
    name = "abstract"

    def __call__(self, pipe, prompts: list[str], seeds: list[int], *, before: bool = True) -> AttackResult:
        """Images under each of the attack's settings; with `before`, a searching attack also generates the prompts
        as given (under "before", the pre-attack rate)."""
        raise NotImplementedError


def build_attack(name: str, concept: str, **options) -> Attack:
    """The registered attack `name` for `concept`, with the given options (None: the attack's default); an
    option the attack does not take is an ErasekitError naming the ones it does."""
    if name not in ATTACKS:
        raise ErasekitError(f"unknown attack {name!r} (available: {', '.join(sorted(ATTACKS))})")
    cls = ATTACKS[name]
    accepted = set(inspect.signature(cls).parameters) - {"concept"}
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ErasekitError(f"{name} does not take {', '.join(unknown)} (its options: {', '.join(sorted(accepted))})")
    return cls(concept, **given)


def against(edits: list[dict]) -> str | list[str]:
    """What an attack ran against, from the applied edits' metadata: each "method on concepts", or the original."""
    return [f"{e['method']} on {', '.join(e['concepts'])}" for e in edits] or "the original model (no edit applied)"
