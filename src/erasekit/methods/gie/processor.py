"""GIE's attention processor: the growth inhibitor in cross-attention, branch 0's maps in low-resolution
self-attention."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .parity import read_through


def _heads(attn, x: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, inner) → (batch, heads, tokens, head_dim)."""
    b, n, _ = x.shape
    return x.view(b, n, attn.heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class GIEAttention:
    """Cross-attention gets the inhibitor, low-resolution self-attention the copied maps; plain attention for
    every other row and step, so uncond rows and inactive steps are untouched."""

    def __init__(self, session, name: str, cross: bool):
        self.session, self.name, self.cross = session, name, cross

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, length, _ = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape
        mask = None
        if attention_mask is not None:  # as diffusers' AttnProcessor2_0: (batch, heads, 1 or queries, keys)
            mask = attn.prepare_attention_mask(attention_mask, length, batch)
            mask = _bias(mask.view(batch, attn.heads, -1, mask.shape[-1]), hidden_states.dtype)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = _heads(attn, attn.to_q(hidden_states)), _heads(attn, attn.to_k(context)), \
            _heads(attn, attn.to_v(context))
        s = self.session
        paired = bool(s.pairs) and s.pairs[0][1] is not None  # parity: branch-1 rows have branch-0 partners
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scale)
        if not self.cross and paired and s.active("self"):
            out = self._copy_maps(attn, q, k, v, mask, out)
        if self.cross:
            out = self._inhibit(attn, q, k, v, mask, out)
        out = attn.to_out[1](attn.to_out[0](_merge(out)))
        if four_d:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _copy_maps(self, attn, q, k, v, mask, out: torch.Tensor) -> torch.Tensor:
        """Self-attention where each branch-1 row uses its branch-0 row's map over its own values."""
        rows, partners = (list(side) for side in zip(*self.session.pairs))
        out[rows] = _map(attn, q, k, mask, partners) @ v[rows]
        return out

    def _inhibit(self, attn, q, k, v, mask, out: torch.Tensor) -> torch.Tensor:
        """The growth inhibitor: each E token i adds w_i · M*_i · V(c*_i) to the prompt rows' output, M* =
        softmax(Q K(c*)ᵀ/√d); at a run's first step it records M*'s mean per E token (the adapter's features)."""
        s = self.session
        if not (s.recording or s.active("cross")) or not s.pairs:
            return out
        c_star = s.c_star.to(q.dtype)
        k_star, v_star = _heads(attn, attn.to_k(c_star))[0], _heads(attn, attn.to_v(c_star))[0]
        rows = [row for row, _ in s.pairs]
        m_star = (q[rows] @ k_star.transpose(-1, -2) * attn.scale).softmax(-1)[..., s.columns]  # (P, h, n, E)
        if s.recording:
            s.recorded[self.name] = m_star.mean(dim=(1, 2)).detach().float().cpu()
        if not s.active("cross"):
            return out
        weights = s.weights().to(q.device, q.dtype)[:, None, None, :]  # (P, 1, 1, E)
        injected = (m_star * weights) @ v_star[:, s.columns]
        out[rows] = self._base(attn, q, k, v, mask, out) + injected  # `out` is this call's own tensor
        return out

    def _base(self, attn, q, k, v, mask, out: torch.Tensor) -> torch.Tensor:
        """The prompt rows' output before the inhibitor: fast mode, the row's own; parity, branch 0's (its map
        copied); with `parity_rows`, branch 0's map read through the alignment over the row's own values."""
        rows, partners = (list(side) for side in zip(*self.session.pairs))
        if partners[0] is None:
            return out[rows]
        if self.session.reads is None:
            return out[partners]
        return read_through(_map(attn, q, k, mask, partners), v[rows], self.session.reads)


def _map(attn, q, k, mask, rows: list[int]) -> torch.Tensor:
    """The attention map (rows, heads, queries, keys) of the batch rows `rows`."""
    logits = q[rows] @ k[rows].transpose(-1, -2) * attn.scale
    return (logits if mask is None else logits + mask[rows]).softmax(-1)


def _bias(mask: torch.Tensor, dtype) -> torch.Tensor:
    """An attention mask as an additive bias (a boolean one: True attends)."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
