"""Cross-attention layers of a UNet, found through the modules' own `is_cross_attention` flag."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

# UNet2DConditionModel runs its blocks down → mid → up, but registers them down → up → mid.
_EXECUTION_RANK = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


@dataclass(frozen=True)
class CrossAttentionLayer:
    name: str                      # module path in the UNet, e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    module: torch.nn.Module        # diffusers Attention
    registration_index: int        # position in unet.named_modules()
    execution_index: int           # position in the order a forward pass calls it

    @property
    def to_k(self) -> torch.nn.Linear:
        return self.module.to_k

    @property
    def to_v(self) -> torch.nn.Linear:
        return self.module.to_v

    @property
    def d_out(self) -> int:
        return self.module.to_k.out_features

    @property
    def d_text(self) -> int:
        return self.module.to_k.in_features


def _execution_key(name: str) -> tuple:
    top = name.split(".")[0]
    numbers = tuple(int(n) for n in re.findall(r"\.(\d+)(?=\.|$)", name))
    return (_EXECUTION_RANK.get(top, 3), numbers)


def find_cross_attention(unet: torch.nn.Module) -> list[CrossAttentionLayer]:
    """All cross-attention modules of `unet`, in registration order, each knowing its execution position."""
    found = [(name, m) for name, m in unet.named_modules() if getattr(m, "is_cross_attention", False)]
    by_execution = sorted(range(len(found)), key=lambda i: _execution_key(found[i][0]))
    execution_index = {i: rank for rank, i in enumerate(by_execution)}
    return [CrossAttentionLayer(name, m, i, execution_index[i]) for i, (name, m) in enumerate(found)]


def in_execution_order(layers: list[CrossAttentionLayer]) -> list[CrossAttentionLayer]:
    return sorted(layers, key=lambda layer: layer.execution_index)


def kv_weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name → weight of every cross-attention to_k / to_v, in registration order."""
    out = {}
    for layer in find_cross_attention(unet):
        out[f"{layer.name}.to_k.weight"] = layer.to_k.weight.detach()
        out[f"{layer.name}.to_v.weight"] = layer.to_v.weight.detach()
    return out
