"""A model's fingerprint: its architecture, and a hash of the weights an Edit changes, so that an Edit can
refuse a model it was not made for."""
from __future__ import annotations

import hashlib
import json

import torch

_VOLATILE = ("_name_or_path", "_diffusers_version", "_class_name", "_use_default_values")


def architecture_hash(pipe) -> str:
    config = {k: v for k, v in dict(pipe.unet.config).items() if k not in _VOLATILE}
    blob = json.dumps({"family": getattr(pipe, "erasekit_family", "unknown"), "unet": config}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def tensors_hash(tensors: dict[str, torch.Tensor]) -> str:
    """Hash of named tensors' float32 values, independent of device and of dict order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float32).contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(pipe, param_names: list[str], weights: dict[str, torch.Tensor] | None = None) -> dict:
    """`weights`: the tensors to hash for `param_names` (default: the UNet's current parameters)."""
    params = weights if weights is not None else dict(pipe.unet.named_parameters())
    return {
        "family": getattr(pipe, "erasekit_family", "unknown"),
        "architecture": architecture_hash(pipe),
        "weights": tensors_hash({n: params[n] for n in param_names}),
        "shapes": {n: list(params[n].shape) for n in param_names},
    }
