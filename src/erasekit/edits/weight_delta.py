"""Weight-delta edits: ΔW per UNet parameter, stored full or as exact low-rank factors (ΔW = up @ down)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import EditError
from ..models.fingerprint import fingerprint, tensors_hash
from .base import Edit, register_edit_kind
from .lora import factor, write_lora
from .state import edit_state

FULL, UP, DOWN = "delta.", "up.", "down."


@register_edit_kind
class WeightDelta(Edit):
    """Add ΔW to named UNet parameters. `remove` restores the exact original tensors, whatever the order in which
    stacked edits are removed."""
    kind = "weight_delta"

    @classmethod
    def create(cls, pipe, deltas: dict[str, torch.Tensor | tuple[torch.Tensor, torch.Tensor]], **metadata):
        """deltas: parameter name → full ΔW, or (up, down) with ΔW = up @ down. The fingerprint is taken
        from `pipe`'s weights before this edit (stacked edits' originals when some are applied)."""
        tensors = {}
        for name, delta in deltas.items():
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

    def delta(self, name: str) -> torch.Tensor:
        if FULL + name in self.tensors:
            return self.tensors[FULL + name]
        return self.tensors[UP + name] @ self.tensors[DOWN + name]

    def _check_fits(self, pipe) -> None:
        super()._check_fits(pipe)
        params = dict(pipe.unet.named_parameters())
        missing = [n for n in self.param_names if n not in params]
        if missing:
            raise EditError(f"{self} edits parameters this UNet does not have: {missing[:3]}")
        shapes = self.metadata["fingerprint"].get("shapes", {})
        for name in self.param_names:
            if list(params[name].shape) != list(self.delta(name).shape) or \
                    (name in shapes and list(shapes[name]) != list(params[name].shape)):
                raise EditError(f"{self} does not fit {name}: shape {list(params[name].shape)} vs "
                                f"{list(self.delta(name).shape)}")
        expected = self.metadata["fingerprint"].get("weights")
        if expected and tensors_hash(_base_weights(pipe, self.param_names)) != expected:
            raise EditError(f"{self} was made for other weights (fingerprint {expected}): refusing to apply it "
                            "to a different model")

    def _apply(self, pipe) -> None:
        originals = _originals(pipe)
        params = dict(pipe.unet.named_parameters())
        for name in self.param_names:
            originals.setdefault(name, params[name].detach().clone())
        _recompute(pipe, self.param_names, pending=self)

    def _remove(self, pipe) -> None:
        _recompute(pipe, self.param_names)

    def export_lora(self, path: str | Path, max_rank: int | None = None, tol: float = 1e-7) -> dict:
        """Write ΔW as a LoRA file for `pipe.load_lora_weights(path)`: exact where the stored rank fits
        `max_rank`, otherwise an SVD truncation whose relative error is reported."""
        factors, report = {}, {}
        for name in self.param_names:
            if not name.endswith(".weight") or self.delta(name).ndim != 2:
                raise EditError(f"{name}: only linear-layer weights can be exported as LoRA")
            stored_rank = self.tensors[UP + name].shape[1] if UP + name in self.tensors else None
            if stored_rank is not None and (max_rank is None or stored_rank <= max_rank):
                b, a, error = self.tensors[UP + name], self.tensors[DOWN + name], 0.0
            else:
                b, a, error = factor(self.delta(name), max_rank, tol)
            factors[name[: -len(".weight")]] = (b, a)
            report[name] = {"rank": a.shape[0], "relative_error": error}
        write_lora(factors, path, self.method)
        return {"path": str(path), "max_relative_error": max(r["relative_error"] for r in report.values()),
                "ranks": sorted({r["rank"] for r in report.values()}), "layers": report}


def _originals(pipe) -> dict[str, torch.Tensor]:
    return edit_state(pipe).originals


def _base_weights(pipe, names: list[str]) -> dict[str, torch.Tensor]:
    """The weights before any weight-delta edit: stored originals where an edit touched them."""
    originals, params = _originals(pipe), dict(pipe.unet.named_parameters())
    return {n: originals.get(n, params[n]) for n in names}


@torch.no_grad()
def _recompute(pipe, names: list[str], pending: WeightDelta | None = None) -> None:
    """W = W_original + Σ ΔW of the applied weight-delta edits, in order; the exact original when none remain."""
    edits = [e for e in edit_state(pipe).stack if isinstance(e, WeightDelta)] + ([pending] if pending else [])
    originals, params = _originals(pipe), dict(pipe.unet.named_parameters())
    for name in names:
        touching = [e for e in edits if name in e.param_names]
        if not touching:
            params[name].copy_(originals.pop(name))
            continue
        total = originals[name].double()
        for e in touching:
            total = total + e.delta(name).to(total.device, torch.float64)
        params[name].copy_(total.to(params[name].dtype))
