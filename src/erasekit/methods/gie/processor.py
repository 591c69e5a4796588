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
            residual = hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = _heads(attn, attn.to_q(hidden_states)), _heads(attn, attn.to_k(context)), \
            _heads(attn, attn.to_v(context))
        s = self.session
        paired = bool(s.pairs) and s.pairs[0][1] is not None  # parity: branch-1 rows have branch-0 partners
        if not self.cross and paired and s.active("self"):
            out = self._copy_maps(attn, q, k, v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        if self.cross:
            out = self._inhibit(attn, q, k, v, out)
        out = attn.to_out[1](attn.to_out[0](_merge(out)))
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        if four_d:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        return out

    def _copy_maps(self, attn, q, k, v) -> torch.Tensor:
        """Self-attention where each branch-1 row uses its branch-0 row's map over its own values."""
        rows, partners = zip(*self.session.pairs)
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        probs = (q[list(partners)] @ k[list(partners)].transpose(-1, -2) * attn.scale).softmax(-1)
        out[list(rows)] = probs @ v[list(rows)]
        return out

    def _inhibit(self, attn, q, k, v, out: torch.Tensor) -> torch.Tensor:
        s = self.session
        if not (s.recording or s.active("cross")) or not s.pairs:
            return out
        c_star = s.c_star.to(q.dtype)
        k_star, v_star = _heads(attn, attn.to_k(c_star))[0], _heads(attn, attn.to_v(c_star))[0]
        rows, partners = zip(*s.pairs)
        rows = list(rows)
        m_star = (q[rows] @ k_star.transpose(-1, -2) * attn.scale).softmax(-1)[..., s.columns]  # (P, h, n, E)
        if s.recording:
            s.recorded[self.name] = m_star.mean(dim=(1, 2)).detach().float().cpu()
        if not s.active("cross"):
            return out
        weights = s.weights().to(q.device, q.dtype)[:, None, None, :]  # (P, 1, 1, E)
        injected = (m_star * weights) @ v_star[:, s.columns]
        if s.reads is not None:  # parity_rows: branch 0's map, read through the alignment, over own values
            partners = list(partners)
            probs = (q[partners] @ k[partners].transpose(-1, -2) * attn.scale).softmax(-1)
            base = read_through(probs, v[rows], s.reads)
        else:
            base = out[rows] if partners[0] is None else out[list(partners)]  # fast: own map; parity: branch 0's
        out[rows] = base + injected  # `out` is this call's own tensor; indexing made `base` a copy
        return out
