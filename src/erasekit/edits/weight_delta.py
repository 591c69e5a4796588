"""Weight-delta edits: ΔW per parameter of the UNet or a text encoder (`unet.…`, `text_encoder.…`,
`text_encoder_2.…`), stored full or as exact low-rank factors (ΔW = up @ down)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import EditError
from ..models.fingerprint import SAMPLED, fingerprint, tensors_hash
from ..models.parameters import canonical, parameter, split
from .base import Edit, register_edit_kind
from .lora import factor, write_lora
from .state import edit_state

FULL, UP, DOWN = "delta.", "up.", "down."


@register_edit_kind
class WeightDelta(Edit):
    """Add ΔW to named parameters. `remove` restores the exact original tensors, whatever the order in which
    stacked edits are removed. Applying keeps each touched weight's original tensor (no copy) and gives the
    parameter a new, edited one; untouched weights are neither copied nor hashed."""
    kind = "weight_delta"

    def __init__(self, tensors: dict[str, torch.Tensor] | None = None, **metadata):
        # parameter names are canonical (`component.name`); files written by erasekit 0.1 name UNet ones bare
        super().__init__({_canonical_key(k): v for k, v in (tensors or {}).items()}, **metadata)

    @classmethod
    def create(cls, pipe, deltas: dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]], **metadata):
        """deltas: parameter name → full ΔW, or (up, down) with ΔW = up @ down. The fingerprint is taken
        from `pipe`'s weights before this edit (stacked edits' originals when some are applied)."""
        tensors = {}
        for name, delta in deltas.items():
            name = canonical(name)
            if isinstance(delta, tuple):
                tensors[UP + name], tensors[DOWN + name] = (t.detach().float().cpu() for t in delta)
            else:
                tensors[FULL + name] = delta.detach().float().cpu()
        edit = cls(tensors, **metadata)
        edit.metadata["fingerprint"] = fingerprint(pipe, edit.param_names, _base_weights(pipe, edit.param_names))
        return edit

    @property
    def param_names(self) -> list[str]:
        return sorted({k.split(".", 1)[1] for k in self.tensors})

    def stored(self) -> dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """name → ΔW as stored: full, or the exact (up, down) factors (what `create` takes)."""
        return {n: (self.tensors[UP + n], self.tensors[DOWN + n]) if UP + n in self.tensors
                else self.tensors[FULL + n] for n in self.param_names}

    def delta(self, name: str) -> torch.Tensor:
        name = canonical(name)
        if FULL + name in self.tensors:
            return self.tensors[FULL + name]
        return self.tensors[UP + name] @ self.tensors[DOWN + name]

    def _check_fits(self, pipe) -> None:
        super()._check_fits(pipe)
        record = self.metadata["fingerprint"]
        shapes = {canonical(n): shape for n, shape in record.get("shapes", {}).items()}
        for name in self.param_names:
            shape = list(parameter(pipe, name).shape)
            if shape != list(self._shape(name)) or (name in shapes and list(shapes[name]) != shape):
                raise EditError(f"{self} does not fit {name}: shape {shape} vs {list(self._shape(name))}")
        expected = record.get("weights")
        if expected and _weights_hash(pipe, self.param_names, record.get("hash")) != expected:
            raise EditError(f"{self} was made for other weights (fingerprint {expected}): refusing to apply it "
                            "to a different model")

    def _shape(self, name: str) -> torch.Size:
        if FULL + name in self.tensors:
            return self.tensors[FULL + name].shape
        return torch.Size([self.tensors[UP + name].shape[0], *self.tensors[DOWN + name].shape[1:]])

    def _apply(self, pipe) -> None:
        originals = _originals(pipe)
        for name in self.param_names:  # the original tensor itself is kept (no copy); the edited weight is new
            originals.setdefault(name, parameter(pipe, name).data)
        _recompute(pipe, self.param_names, pending=self)

    def _remove(self, pipe) -> None:
        _recompute(pipe, self.param_names)

    def export_lora(self, path: str | Path, max_rank: int | None = None, tol: float = 1e-7) -> dict:
        """Write ΔW as a LoRA file for `pipe.load_lora_weights(path)`: exact where the stored rank fits
        `max_rank`, otherwise an SVD truncation whose relative error is reported."""
        factors, report = {}, {}
        for name, stored in self.stored().items():
            if not name.endswith(".weight") or self.delta(name).ndim != 2:
                raise EditError(f"{name}: only linear-layer weights can be exported as LoRA")
            if isinstance(stored, tuple) and (max_rank is None or stored[0].shape[1] <= max_rank):
                (b, a), error = stored, 0.0
            else:
                b, a, error = factor(self.delta(name), max_rank, tol)
            factors[name[: -len(".weight")]] = (b, a)  # `component.module`: diffusers' LoRA key prefix
            report[name] = {"rank": a.shape[0], "relative_error": error}
        write_lora(factors, path, self.method)
        return {"path": str(path), "max_relative_error": max(r["relative_error"] for r in report.values()),
                "ranks": sorted({r["rank"] for r in report.values()}), "layers": report}


def _canonical_key(key: str) -> str:
    kind, name = key.split(".", 1)
    return f"{kind}.{canonical(name)}"


def _originals(pipe) -> dict[str, torch.Tensor]:
    return edit_state(pipe).originals


def _base_weights(pipe, names: list[str]) -> dict[str, torch.Tensor]:
    """The weights before any weight-delta edit: stored originals where an edit touched them."""
    originals = _originals(pipe)
    return {n: originals[n] if n in originals else parameter(pipe, n) for n in names}


def _weights_hash(pipe, names: list[str], kind: str | None) -> str:
    """The fingerprint hash of the base weights, as the edit's fingerprint was written (sampled since 0.2;
    erasekit 0.1 hashed every element under the bare UNet names)."""
    base = _base_weights(pipe, names)
    if kind == SAMPLED:
        return tensors_hash(base, sampled=True)
    return tensors_hash({split(n)[1]: t for n, t in base.items()})


@torch.no_grad()
def _recompute(pipe, names: list[str], pending: WeightDelta | None = None) -> None:
    """W = W_original + Σ ΔW of the applied weight-delta edits, in order, as a new tensor; with none left, the
    parameter gets its original tensor back (the very storage it had: bit-exact, and computed with as before).
    One edit's ΔW is added in the weight's own precision; several are summed in float64 first, so the result
    does not depend on the order they were applied in."""
    edits = [e for e in edit_state(pipe).stack if isinstance(e, WeightDelta)] + ([pending] if pending else [])
    originals = _originals(pipe)
    for name in names:
        param = parameter(pipe, name)
        touching = [e for e in edits if name in e.param_names]
        original = originals[name]
        if not touching:
            param.data = originals.pop(name)
        elif len(touching) == 1:
            param.data = original + touching[0].delta(name).to(original.device, original.dtype)
        else:
            total = original.double()
            for e in touching:
                total = total + e.delta(name).to(total.device, torch.float64)
            param.data = total.to(original.dtype)
