"""Red-teaming attacks: one class per attack, called once on a pipeline (edited or not).

    attack = RingABell(concept="nudity", strengths=(1, 3, 5))
    result = attack(pipe, prompts, seeds)      # AttackResult: images per setting + the adversarial inputs
    attack = build_attack("p4d", "triangle", k=3, iterations=20)   # by registered name, options checked

Embedding form: Ring-A-Bell. Discrete search on the text encoder: Ring-A-Bell's genetic algorithm. White-box on
the erased model (SD1/SD2): UnlearnDiffAtk, P4D, concept inversion (CCE), on the helpers in `whitebox`.
"""
from .base import ATTACKS, Attack, AttackResult, build_attack, register_attack
from .concept_inversion import ConceptInversion
from .p4d import P4D
from .ring_a_bell import RingABell
from .ring_a_bell_ga import RingABellGA
from .unlearndiffatk import UnlearnDiffAtk
from .whitebox import SearchAttack, SoftPrompt, original_model, project, real_token_ids

__all__ = ["ATTACKS", "Attack", "AttackResult", "ConceptInversion", "P4D", "RingABell", "RingABellGA",
           "SearchAttack", "SoftPrompt", "UnlearnDiffAtk", "build_attack", "original_model", "project",
           "real_token_ids", "register_attack"]
