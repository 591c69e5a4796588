"""What every training run is configured by: steps, optimiser, schedule, clipping, accumulation, seed,
checkpoints. Methods embed it in their own config; bad values are refused before anything is written."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import ErasekitError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


class TrainingError(ErasekitError):
    """A training run cannot start or continue (bad settings, a non-finite loss, a mismatched resume)."""


@dataclass
class TrainingConfig:
    steps: int = 200
    lr: float = 1e-5
    optimizer: str = "adamw"           # adamw | adam | sgd
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"         # constant | cosine | linear (to lr·lr_floor), after `warmup` linear steps
    warmup: int = 0
    lr_floor: float = 0.0              # where cosine and linear end, as a fraction of lr (0 to 1)
    grad_clip: float = 1.0             # max global gradient norm; 0 turns clipping off
    accumulation: int = 1              # micro-batches per optimiser step
    seed: int = 0
    checkpoint_every: int = 50         # steps; 0: only at the end (when a folder is given)
    log_every: int = 10

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.check()

    def check(self) -> None:
        def whole(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TrainingError(f"{name} must be a whole number ≥ {low}, not {value!r}")

        def finite(name, low=0.0, strict=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < low or (strict and value == low):
                raise TrainingError(f"{name} must be a finite number {'>' if strict else '≥'} {low:g}, "
                                    f"not {value!r}")
        for name in ("steps", "accumulation", "log_every"):
            whole(name, 1)
        for name in ("warmup", "checkpoint_every", "seed"):
            whole(name, 0)
        finite("lr", strict=True)
        finite("weight_decay")
        finite("grad_clip")
        finite("lr_floor")
        if self.lr_floor > 1:
            raise TrainingError(f"lr_floor must be at most 1 (a fraction of lr), not {self.lr_floor!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainingError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise TrainingError(f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            raise TrainingError(f"betas must be two numbers in [0, 1), not {self.betas!r}")

    def record(self) -> dict:
        """The settings as JSON-ready values (for checkpoints and edit metadata)."""
        return {**asdict(self), "betas": list(self.betas)}

    def lr_at(self, step: int) -> float:
        """Learning rate of 0-based optimiser step `step`."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        span = max(self.steps - self.warmup, 1)
        progress = (step - self.warmup) / span
        if self.schedule == "cosine":
            decay = 0.5 * (1 + math.cos(math.pi * progress))
        elif self.schedule == "linear":
            decay = 1 - progress
        else:
            return self.lr
        return self.lr * (self.lr_floor + (1 - self.lr_floor) * decay)
