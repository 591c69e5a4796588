"""GIE's scale adapter: the MLP that predicts |w| per erase-target token, and its files (shipped ones included).
Training it is `gie_adapter`."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import ErasekitError
from ..utils.files import atomic_dir

WEIGHTS, CARD = "adapter.safetensors", "adapter.json"
SHIPPED = Path(__file__).resolve().parents[1] / "shapeworld" / "weights" / "gie_adapters"


class ScaleAdapter(torch.nn.Module):
    """|w| per E token from its mean attention in each cross-attention layer (16 → 64 → 32 → 1 for SD1).
    Features are standardised with statistics stored alongside the weights."""

    def __init__(self, layers: int):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(layers))
        self.register_buffer("feature_std", torch.ones(layers))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(layers, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                                       torch.nn.ReLU(), torch.nn.Linear(32, 1))

    @property
    def layers(self) -> int:
        return self.feature_mean.numel()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., layers) → |w| (...)."""
        x = (features - self.feature_mean) / self.feature_std
        return torch.nn.functional.softplus(self.mlp(x)).squeeze(-1)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "adapter.") -> "ScaleAdapter":
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        adapter = cls(own["feature_mean"].numel())
        adapter.load_state_dict(own)
        return adapter.eval()

    def to_tensors(self, prefix: str = "adapter.") -> dict[str, torch.Tensor]:
        return {prefix + k: v.detach().clone() for k, v in self.state_dict().items()}


def shipped_adapter(spec) -> Path:
    """The adapter shipped for a ShapeWorld concept (trained on the embedded model)."""
    path = SHIPPED / spec.name.split("/")[-1].replace(" ", "-")
    if not (path / WEIGHTS).is_file():
        available = sorted(p.name for p in SHIPPED.glob("*") if (p / WEIGHTS).is_file())
        raise ErasekitError(f"no shipped GIE adapter for {spec.name!r}; shipped: {', '.join(available) or 'none'}; "
                            "train one with 'erasekit gie-adapter'")
    return path


def save_adapter(adapter: ScaleAdapter, path: str | Path, report: dict | None = None) -> Path:
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, tmp / WEIGHTS)
        (tmp / CARD).write_text(json.dumps({"layers": adapter.layers, **(report or {})}, indent=2))
    return Path(path)


def load_adapter(path: str | Path) -> ScaleAdapter:
    path = Path(path)
    if not (path / WEIGHTS).is_file():
        raise ErasekitError(f"{path} is not a GIE scale adapter folder (no {WEIGHTS})")
    return ScaleAdapter.from_tensors(load_file(path / WEIGHTS), prefix="")
