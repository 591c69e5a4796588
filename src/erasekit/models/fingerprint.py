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


SAMPLED = "sampled-v1"   # the weights hash of fingerprints written since erasekit 0.2
SAMPLE_SIZE = 1 << 16    # elements hashed per tensor: an evenly strided sample of larger ones


def tensors_hash(tensors: dict[str, torch.Tensor], sampled: bool = False) -> str:
    """Hash of named tensors' float32 values, independent of device and of dict order. `sampled`: of large
    tensors only an evenly strided sample of SAMPLE_SIZE elements is hashed (with every shape), so that checking
    a whole UNet's weights takes milliseconds; any other trained model differs there."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        if sampled and t.numel() > SAMPLE_SIZE:
            t = t.reshape(-1)[:: t.numel() // SAMPLE_SIZE][:SAMPLE_SIZE]
        h.update(t.to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(pipe, param_names: list[str], weights: dict[str, torch.Tensor] | None = None) -> dict:
    """What an edit was made for: the architecture, and (sampled) hashes and shapes of the weights it changes,
    `weights` being those tensors before the edit, by canonical name."""
    weights = weights or {}
    return {
        "family": getattr(pipe, "erasekit_family", "unknown"),
        "architecture": architecture_hash(pipe),
        "hash": SAMPLED,
        "weights": tensors_hash({n: weights[n] for n in param_names}, sampled=True),
        "shapes": {n: list(weights[n].shape) for n in param_names},
    }


def model_fingerprint(pipe) -> dict:
    """The whole model, for an evaluation protocol: the architecture and a hash of every element of every weight
    of the components an edit may change (UNet and text encoders), so a fine-tuned model never passes as the
    original. Once per run, so not sampled."""
    from .parameters import named_parameters
    return {"family": getattr(pipe, "erasekit_family", "unknown"), "architecture": architecture_hash(pipe),
            "weights": tensors_hash(named_parameters(pipe)),
            "source": str(getattr(pipe, "erasekit_source", ""))}
