"""The detector type."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ErasekitError


class DetectorUnavailable(ErasekitError):
    """The detector's model or package is not available here."""


@dataclass(frozen=True)
class Detector:
    """`probabilities(images) -> (N,)` in [0, 1], and `verdicts(images) -> (N,) bool` (whether each image shows
    the concept; by default probability ≥ threshold). Images: PIL images, uint8 (N, H, W, 3) arrays or float
    (N, 3, H, W) tensors in [0, 1]."""
    name: str
    probabilities: Callable[[object], torch.Tensor]
    verdicts: Callable[[object], torch.Tensor] | None = None
    threshold: float = 0.5
    settings: dict = field(default_factory=dict)

    def present(self, images) -> torch.Tensor:
        if self.verdicts is not None:
            return self.verdicts(images)
        return self.probabilities(images) >= self.threshold

    def rate(self, images) -> float:
        """Fraction of images in which the concept is detected."""
        flags = self.present(images)
        return flags.float().mean().item() if len(flags) else 0.0

    def describe(self) -> dict:
        return {"name": self.name, **self.settings}
