"""ForceForget's Safe Adapter (Han & Li, ICML 2026): for each cross-attention layer, its own key and value
projections for a few positions of the text context — by default the last 4 (the tail of the padded context, the
authors' choice) — whose keys and values take the place of the layer's own for those positions:

    Attn(Q, [K''; K_sa], [V''; V_sa]),   K'' = the layer's (optionally LoRA-adapted) keys of the other tokens

A projection is linear and acts token by token, so this is the layer's `to_k` / `to_v` with a different matrix on
those positions. It is stored as the difference D = W_sa − W, zero at the start, and hooked onto `to_k` / `to_v` as
an output adapter (out + D x on the adapter's positions): the untrained adapter adds exact zeros, so images are
bit-identical. An optional rank-r LoRA on the layer's own projection (all positions) trains alongside.

Options (the edit's config): `positions` "tail" (the last `tokens` positions; default), "head" (the `tokens`
positions after the start token — the front, which the authors' ablation found worse) or "all" (every position: a
full-rank change of K/V, which also covers "the content tokens and the first EoT"); `tokens` (4); `lora_rank` (0);
`projections` ("kv": keys and values, the paper's; "v": values only, so attention goes where it went and only what
the read positions contribute changes); `reader_dims` (0: the adapter reads the whole text row, the paper's). With
`reader_dims` = m > 0 the adapter and its LoRA read each text row only along m fixed directions (a buffer, `reader`,
saved with the edit and set by the method that trains it), so that rows without a component there — other prompts' —
pass unchanged.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import EditError
from ..models.layers import find_cross_attention
from .adapter import register_adapter

POSITIONS = ("tail", "head", "all")
PROJECTIONS = {"kv": ("to_k", "to_v"), "v": ("to_v",)}  # which of a layer's projections get an adapter


def window(positions: str, tokens: int, length: int) -> slice:
    """The context positions a Safe Adapter projects, for a context of `length` tokens."""
    if positions == "all":
        return slice(0, length)
    if not 1 <= tokens <= length - 1:
        raise EditError(f"a Safe Adapter over {tokens} positions does not fit a {length}-token context")
    return slice(length - tokens, length) if positions == "tail" else slice(1, 1 + tokens)


@register_adapter("safe")
class SafeAdapter(nn.Module):
    """The Safe Adapter of one `to_k` or `to_v` projection (`target`), configured by the edit's config."""

    def __init__(self, config: dict, target: nn.Linear, generator: torch.Generator | None = None):
        super().__init__()
        self.positions, self.tokens = config.get("positions", "tail"), int(config.get("tokens", 4))
        if self.positions not in POSITIONS:
            raise EditError(f"Safe Adapter positions must be one of {', '.join(POSITIONS)}, not {self.positions!r}")
        rank, dims = int(config.get("lora_rank", 0)), int(config.get("reader_dims", 0))
        # the directions read (in_features, m): a buffer, set by whoever builds the adapter
        self.register_buffer("reader", torch.zeros(target.in_features, dims) if dims > 0 else None)
        width = dims or target.in_features
        self.projection = nn.Parameter(torch.zeros(target.out_features, width))  # W_sa − W (on what is read)
        self.lora_down = self.lora_up = None
        if rank > 0:  # peft's "gaussian" start: down ~ N(0, 1/r), up = 0, so the start changes nothing
            self.lora_down = nn.Parameter(torch.randn(rank, width, generator=generator) / rank)
            self.lora_up = nn.Parameter(torch.zeros(target.out_features, rank))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        span = window(self.positions, self.tokens, context.shape[-2])
        if self.reader is not None:
            context = context @ self.reader.to(context.dtype)
        inside = context[..., span, :] @ self.projection.to(context.dtype).T
        before = inside.new_zeros(*context.shape[:-2], span.start, inside.shape[-1])
        after = inside.new_zeros(*context.shape[:-2], context.shape[-2] - span.stop, inside.shape[-1])
        delta = torch.cat([before, inside, after], dim=-2)
        if self.lora_down is not None:
            delta = delta + (context @ self.lora_down.to(context.dtype).T) @ self.lora_up.to(context.dtype).T
        return delta


def safe_adapters(unet: nn.Module, config: dict, seed: int = 0,
                  reader: torch.Tensor | None = None) -> dict[str, SafeAdapter]:
    """A fresh (zero) Safe Adapter for every cross-attention `to_k` and `to_v` of `unet` (`to_v` alone with
    `projections="v"`), keyed by module name; `reader` (in_features, reader_dims) the directions each reads when the
    config asks for them."""
    dims, projections = int(config.get("reader_dims", 0)), config.get("projections", "kv")
    if projections not in PROJECTIONS:
        raise EditError(f"Safe Adapter projections must be one of {', '.join(PROJECTIONS)}, not {projections!r}")
    if dims and (reader is None or reader.ndim != 2 or reader.shape[1] != dims):
        raise EditError(f"a Safe Adapter with reader_dims={dims} needs its reader directions (d, {dims})")
    generator = torch.Generator().manual_seed(seed)
    adapters, names = {}, PROJECTIONS[projections]
    for layer in find_cross_attention(unet):
        for name, projection in ((n, getattr(layer, n)) for n in names):
            adapter = SafeAdapter(config, projection, generator)
            if dims:
                if reader.shape[0] != projection.in_features:
                    raise EditError(f"reader directions of width {reader.shape[0]} do not fit {layer.name}.{name} "
                                    f"({projection.in_features} inputs)")
                adapter.reader.copy_(reader)
            adapters[f"{layer.name}.{name}"] = adapter.to(projection.weight.device, projection.weight.dtype)
    if not adapters:
        raise EditError("this UNet has no cross-attention layers for a Safe Adapter")
    return adapters
