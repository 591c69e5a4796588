"""GIE's scale adapter: the MLP that predicts w per erase-target token, and its files (shipped ones included).
Training it is `adapter_training`.

Two kinds, kept in the file (safetensors metadata and the JSON card; files without it are "erasekit"):
- "erasekit": features standardised with statistics stored beside the weights; the MLP's softplus is |w|, so
  w = −softplus(·) always inhibits; its features are recorded in a probe pass at w = 0 (nothing injected yet).
- "authors": the official code's adapter: a plain layers → 64 → 32 → 1 MLP (ReLU between), no standardisation, whose
  raw output is w itself; its features are recorded at w = +1 (the official probe injects E with weight 1)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ...errors import ErasekitError
from ...utils.files import atomic_dir, slug

WEIGHTS, CARD = "adapter.safetensors", "adapter.json"
PROBE_STRENGTH = {"erasekit": 0.0, "authors": 1.0}  # kind → the w at which its features are recorded


def probe_strength(kind: str) -> float:
    if kind not in PROBE_STRENGTH:
        raise ErasekitError(f"unknown scale adapter kind {kind!r}; kinds: {', '.join(PROBE_STRENGTH)}")
    return PROBE_STRENGTH[kind]


SHIPPED = Path(__file__).resolve().parents[2] / "shapeworld" / "weights" / "gie_adapters"


class ScaleAdapter(torch.nn.Module):
    """w per E token from its mean attention in each cross-attention layer (16 → 64 → 32 → 1 for SD1). `forward`
    is the regression output: |w| for the erasekit kind, w for the authors' kind; `strength` is w for both."""

    def __init__(self, layers: int, kind: str = "erasekit"):
        super().__init__()
        self.kind, self.probe_strength = kind, probe_strength(kind)
        if kind == "erasekit":
            self.register_buffer("feature_mean", torch.zeros(layers))
            self.register_buffer("feature_std", torch.ones(layers))
        self.mlp = torch.nn.Sequential(torch.nn.Linear(layers, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                                       torch.nn.ReLU(), torch.nn.Linear(32, 1))

    @property
    def layers(self) -> int:
        return self.mlp[0].in_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., layers) → |w| (erasekit) or w (authors) (...)."""
        if self.kind == "authors":
            return self.mlp(features).squeeze(-1)
        x = (features - self.feature_mean) / self.feature_std
        return torch.nn.functional.softplus(self.mlp(x)).squeeze(-1)

    def strength(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., layers) → w (...), negative to inhibit."""
        return self(features) if self.kind == "authors" else -self(features)

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str = "adapter.", kind: str = "erasekit"
                     ) -> "ScaleAdapter":
        own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        adapter = cls(own["mlp.0.weight"].shape[1], kind)
        adapter.load_state_dict(own)
        return adapter.eval()

    def to_tensors(self, prefix: str = "adapter.") -> dict[str, torch.Tensor]:
        return {prefix + k: v.detach().clone() for k, v in self.state_dict().items()}


def shipped_adapter(spec) -> Path:
    """The adapter shipped for a ShapeWorld concept (trained on the embedded model)."""
    path = SHIPPED / slug(spec.name.split("/")[-1])
    if not (path / WEIGHTS).is_file():
        available = sorted(p.name for p in SHIPPED.glob("*") if (p / WEIGHTS).is_file())
        raise ErasekitError(f"no shipped GIE adapter for {spec.name!r}; shipped: {', '.join(available) or 'none'}; "
                            "train one with 'erasekit gie-adapter'")
    return path


def save_adapter(adapter: ScaleAdapter, path: str | Path, report: dict | None = None) -> Path:
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, tmp / WEIGHTS,
                  metadata={"kind": adapter.kind})
        (tmp / CARD).write_text(json.dumps({"layers": adapter.layers, "kind": adapter.kind, **(report or {})},
                                           indent=2))
    return Path(path)


def load_adapter(path: str | Path) -> ScaleAdapter:
    path = Path(path)
    if not (path / WEIGHTS).is_file():
        raise ErasekitError(f"{path} is not a GIE scale adapter folder (no {WEIGHTS})")
    with safe_open(path / WEIGHTS, "pt") as f:
        kind = (f.metadata() or {}).get("kind", "erasekit")
    return ScaleAdapter.from_tensors(load_file(path / WEIGHTS), prefix="", kind=kind)
