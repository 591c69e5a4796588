"""Image batch conversions shared by the classifier, the evaluators and the training code."""
from __future__ import annotations

import numpy as np
import torch


def to_uint8(images) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB from PIL images, uint8 arrays (one array or a list) or float tensors in [0, 1]."""
    if isinstance(images, torch.Tensor):
        return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    if isinstance(images, np.ndarray):
        return images
    return np.stack([im if isinstance(im, np.ndarray) else np.asarray(im.convert("RGB")) for im in images])


def to_unit(images) -> torch.Tensor:
    """Float (N, 3, H, W) in [0, 1]; a float tensor is taken as already in that range."""
    if isinstance(images, torch.Tensor):
        return images.float()
    return torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2).float() / 255


def to_signed(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC → float NCHW in [-1, 1], the pipelines' and the VAE's convention."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1

