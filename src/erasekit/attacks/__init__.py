"""Red-teaming attacks: one class per attack, called once on a pipeline (edited or not).

    attack = RingABell(concept="nudity", strengths=(1, 3, 5))
    result = attack(pipe, prompts, seeds)      # AttackResult: images per setting + the adversarial inputs
"""
from .base import ATTACKS, Attack, AttackResult, register_attack
from .ring_a_bell import RingABell

__all__ = ["ATTACKS", "Attack", "AttackResult", "RingABell", "register_attack"]
