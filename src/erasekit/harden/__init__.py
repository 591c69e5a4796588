"""Hardening: red-team in the loop (erasekit's own; METHODS.md, "Hardening").

RECE erases, in closed form, an embedding that still regenerates the concept; hardening does the same with what
the attacks find. Each round attacks the current model (the base edit plus the hardening so far) with the chosen
white-box attacks, each `restarts` times on attack and image seeds of the round's own (never those a report
uses: a fresh seed finds inputs that one run's 0/16 does not show), takes the adversarial inputs whose images
still show the concept (concept inversion's learned word, UnlearnDiffAtk's and
P4D's tokens, Ring-A-Bell-GA's prompt), and erases their encoder rows from the first adversarial token on: each
maps to the same prompt's row without the adversarial tokens (`anchor_alone`: where they are the whole prompt,
P4D-N's, to the spec's anchor instead of the empty prompt), pushed past it (a − η(c − a)), with the preserved
concepts' rows, the target's own rows and earlier rounds' rows held at the current weights and the caption prior,
on every cross-attention K/V matrix (the closed-form solver UCE uses). Preservation (ShapeWorld: the attribute's
other values) and, on ShapeWorld, the target prompts' benign content (`check_benign`) are checked each round; a
round that would put either under its floor is retried with a gentler push (`backoff`: η = 0, the rows mapped to
the prompt's own), and the loop stops when every attack's success is under the target (5 %), when the rounds are
spent, or when even the gentlest push would break preservation or the benign content. It keeps
the accepted round whose strongest attack did least on the loop's seeds (an attack can find its way back after a
round that stopped it).

    edit = erasekit.erase(pipe, "uce", preset("shapeworld/triangle"))
    hardened = erasekit.harden(pipe, edit, attacks=["concept-inversion", "unlearndiffatk"], rounds=3)
    hardened.metadata["protocol"]["hardening"]["rounds"]  # success per attack and preservation per round

The result is one WeightDelta (base delta + hardening deltas). Closed-form edits (uce, rece, trce; a two-stage
TRCE edit keeps its second stage, which trains the queries and self-attention, as it is) are hardened in closed
form; fine-tuned ones (esd-x, esd-u, abo) by a few steps of fine-tuning a round (`tune`: the current model learns
to predict on each adversarial input what it predicts without the adversarial tokens, pushed past it, with its
unconditional and preserved predictions held); `step="tune"` fine-tunes any of them, `step="both"` solves a
closed-form edit's round and then fine-tunes on top of it.
"""
from .config import CLOSED_FORM, HARDENABLE, TUNED, HardenConfig
from .loop import harden
from .output import harden_folder, history_plot, save_hardened

__all__ = ["CLOSED_FORM", "HARDENABLE", "TUNED", "HardenConfig", "harden", "harden_folder", "history_plot",
           "save_hardened"]
