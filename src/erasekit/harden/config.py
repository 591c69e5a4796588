"""The settings of a hardening run, and the checks that refuse bad input before anything runs."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..attacks import ATTACKS
from ..edits import Edit, WeightDelta
from ..errors import ErasekitError, NotSupportedError
from ..methods.finetune import FineTuneConfig, check_weights

# The attacks whose adversarial inputs (token ids, free positions, encoder output) hardening can erase.
HARDENABLE = ("concept-inversion", "unlearndiffatk", "p4d", "ring-a-bell-ga")
# The methods whose cross-attention K/V delta is closed-form, which hardening extends (TRCE's second stage trains
# only the queries and self-attention: a two-stage edit keeps them as they are).
CLOSED_FORM = ("uce", "rece", "trce")
# The fine-tuned methods, whose edits a round trains further (`tune.tuned_round`).
TUNED = ("esd-x", "esd-u", "abo")
STEPS = ("auto", "closed-form", "tune", "both")


@dataclass
class HardenConfig:
    attacks: tuple[str, ...] = ("concept-inversion", "unlearndiffatk")
    rounds: int = 3
    target: float = 0.05           # stop once every attack's success rate is under this by its 95 % interval
    max_drop: float = 0.05         # preservation may fall this much below the base edit's (round 0) …
    floor: float | None = None     # … or, when given, not below this absolute accuracy
    images: int = 16               # images per attack run (four prompts naming the concept, cycled)
    restarts: int = 1              # attack runs per attack per round, each on its own attack and image seeds: every
                                   # run's finds are erased, and the round's rate pools them (a fresh seed finds
                                   # inputs that 0/16 on one seed does not show)
    eta: float = 1.0               # values pushed past the reference rows, a − η(c − a) (UCE's η)
    backoff: tuple[float, ...] = (0.0,)  # gentler η a round is retried with, in order, when its erasure would put
                                   # preservation under the floor (ShapeWorld's style: η = 1 drops the other
                                   # artists 8 points, η = 0 none; the triangle needs η = 1); () stops at once
    lam: float = 0.5               # the solver's λ (UCE's)
    anchor_alone: bool = False     # adversarial tokens that are the whole prompt (P4D-N's) map to the spec's anchor,
                                   # not to the empty prompt (the model's prior: ShapeWorld draws the triangle
                                   # unprompted 14/64 times). Triangle from UCE: P4D 23.8 → 2.5 %, but concept
                                   # inversion 8.8 → 18.8 %, preservation 100 → 95.6 %; the style worse on every
                                   # attack: off
    prior: float = 4.0             # caption prior relative to the erase rows' mass (UCE's: 1; 4 keeps the other
                                   # artists on ShapeWorld: at 1 the style's first round dropped them 29 points)
    seed: int = 1000               # round r's k-th run uses attack seed `seed + r * restarts + k` …
    image_seed: int = 100_000      # … and image seeds from `image_seed + (r * restarts + k) * images`: never the
                                   # reporting seeds
    validation_seeds: int = 8      # preservation: seeds per other value of the attribute (and per target prompt
                                   # for the benign check)
    check_benign: bool = True      # ShapeWorld: a round must also keep the target prompts' other attributes within
                                   # max_drop of the base edit's (from ESD-x the triangle's went 97.8 → 65.3 %
                                   # while the other shapes held)
    validation_seed: int = 50_000  # their first seed
    attack_options: dict = field(default_factory=dict)  # attack name → options for `build_attack`
    step: str = "auto"             # how a round erases: "closed-form" (the K/V rows solved; closed-form edits),
                                   # "tune" (a few steps of fine-tuning; any weight delta), "both" (the closed
                                   # form, then fine-tuning on top; closed-form edits); "auto": by the method
    tuning: dict = field(default_factory=dict)  # options for the fine-tuning step (`tune.TuningStep`)

    def __post_init__(self):
        self.attacks, self.backoff = tuple(self.attacks), tuple(self.backoff)


@dataclass
class TuningStep(FineTuneConfig):
    """A round's training budget (ShapeWorld, 2 cores: ~20 s); a GPU user raises `steps` and `pool_seeds`."""
    steps: int = 50
    lr: float = 1e-3
    sample_steps: int | None = 10
    pool_seeds: int = 2            # trajectories per adversarial input, sampled once by the current model
    loss_weighting: str = "guidance"
    trainable: str = "xattn"       # all of cross-attention (the K/V alone: the closed-form step's weights)
    lam_uncond: float = 1.0
    lam_preserve: float = 1.0
    # preserve_latents: x_t of the held predictions (preserved concepts, captions, the target's prompts): the
    # adversarial inputs' ("target") or the held prompts' own trajectories ("own"; a pool sampled each round)

    def __post_init__(self):
        super().__post_init__()
        check_weights(self, "lam_uncond", "lam_preserve")
        if self.lora_rank:
            raise ErasekitError("the fine-tuning step trains full-rank deltas: lora_rank is not an option of it")


def check_request(edit, config: HardenConfig) -> None:
    """One-line errors for what hardening cannot take: unknown or unsuitable attacks, rounds < 1, bad rates, an
    edit that is not a weight delta of a method it supports, a step or tuning options it does not know. Resolves
    `step="auto"` by the edit's method."""
    if not config.attacks:
        raise ErasekitError("give at least one attack to harden against")
    for name in config.attacks:
        if name not in ATTACKS:
            raise ErasekitError(f"unknown attack {name!r} (harden takes: {', '.join(HARDENABLE)})")
        if name not in HARDENABLE:
            raise NotSupportedError(f"{name} finds no adversarial tokens to erase (harden takes: "
                                    f"{', '.join(HARDENABLE)})")
    unknown = sorted(set(config.attack_options) - set(config.attacks))
    if unknown:
        raise ErasekitError(f"attack options for {', '.join(unknown)}, which is not among the attacks")
    if not isinstance(config.rounds, int) or config.rounds < 1:
        raise ErasekitError(f"rounds must be a whole number of at least 1, not {config.rounds!r}")
    for knob in ("images", "restarts"):
        value = getattr(config, knob)
        if not isinstance(value, int) or value < 1:
            raise ErasekitError(f"{knob} must be a whole number of at least 1, not {value!r}")
    if not 0 < config.target <= 1 or not 0 <= config.max_drop <= 1:
        raise ErasekitError("target must be in (0, 1] and max_drop in [0, 1]")
    gentler = list(config.backoff)
    if gentler != sorted(gentler, reverse=True) or any(not 0 <= eta < config.eta for eta in gentler):
        raise ErasekitError(f"backoff: gentler η values than eta ({config.eta}), descending, ≥ 0 "
                            f"(got {list(config.backoff)})")
    if config.step not in STEPS:
        raise ErasekitError(f"step must be one of {', '.join(STEPS)}, not {config.step!r}")
    check_edit(edit, config.step)
    if config.step == "auto":
        config.step = "closed-form" if edit.method in CLOSED_FORM else "tune"
    if config.step in ("tune", "both"):
        try:
            TuningStep(**config.tuning)
        except (TypeError, ErasekitError) as e:
            raise ErasekitError(f"tuning options: {e}") from None


def check_edit(edit, step: str = "auto") -> None:
    if not isinstance(edit, Edit):
        raise ErasekitError(f"harden takes an Edit (erasekit.erase or erasekit.load_edit), not {type(edit).__name__}")
    if not isinstance(edit, WeightDelta):
        raise NotSupportedError(f"{edit} is a {edit.kind} edit: harden supports weight deltas (uce, rece, trce, "
                                "esd-x, esd-u, abo); adapter and sampling-time edits are not supported yet")
    if edit.method not in CLOSED_FORM + TUNED:
        raise NotSupportedError(f"{edit} ({edit.method}) cannot be hardened: harden supports the closed-form methods "
                                f"({', '.join(CLOSED_FORM)}) and the fine-tuned ones ({', '.join(TUNED)})")
    if step in ("closed-form", "both") and edit.method not in CLOSED_FORM:
        raise ErasekitError(f"{edit} was made by fine-tuning ({edit.method}): its K/V rows have no closed form to "
                            "extend; harden it with step='tune'")
    if "spec" not in edit.metadata["config"]:
        raise ErasekitError(f"{edit} records no concept spec: it cannot be hardened")
