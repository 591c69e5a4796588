"""GIE's attention processor: the growth inhibitor in cross-attention, branch 0's maps in low-resolution
self-attention.

Two inhibitors (`GIEConfig.inhibitor`): "additive", the paper's Σ_i w_i M*_i V(c*_i) added to the prompt rows'
output, and "projection" (erasekit's, the default), which removes the concept's component from that output
(`projection_term`). Why a second one: on ShapeWorld the cross-attention puts 50–98 % of its mass on the
context's end-of-text and padding rows, which carry the prompt's meaning, and ≤ 0.1 on E's word token, for
every shape alike, so M* does not single out the images that grow the concept and the paper's additive term
only recolours (the target stays at 100 % at every |w| up to 32, the benign attributes fall). The concept's
direction relative to the empty prompt and a gain read from the row's own content make the term act where the
concept is and nowhere else (measured: `bench.gie_sweep`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .parity import read_through

INHIBITORS = ("projection", "additive")


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
        """The growth inhibitor on the prompt rows' output; at a run's first step it records the scale adapter's
        features per E token: M*'s mean (additive), the concept's gain in the row (projection, `token_gains`).
        M* = softmax(Q K(c*)ᵀ/√d) over Enc(E)'s rows."""
        s = self.session
        if not (s.recording or s.active("cross")) or not s.pairs:
            return out
        c_star = s.c_star.to(q.dtype)
        k_star, v_star = _heads(attn, attn.to_k(c_star))[0], _heads(attn, attn.to_v(c_star))[0]
        rows = [row for row, _ in s.pairs]
        q_rows = q[rows]
        m_star = (q_rows @ k_star.transpose(-1, -2) * attn.scale).softmax(-1)[..., s.columns]  # (P, h, n, E)
        base = self._base(attn, q, k, v, mask, out)
        if s.inhibitor == "additive":
            if s.recording:
                s.recorded[self.name] = m_star.mean(dim=(1, 2)).detach().float().cpu()
            if s.active("cross"):
                out[rows] = base + (m_star * s.weights().to(q)[:, None, None, :]) @ v_star[:, s.columns]
            return out  # `out` is this call's own tensor
        c_null = s.c_null.to(q.dtype)
        k_null, v_null = _heads(attn, attn.to_k(c_null))[0], _heads(attn, attn.to_v(c_null))[0]
        content = base - (q_rows @ k_null.transpose(-1, -2) * attn.scale).softmax(-1) @ v_null  # less the empty's
        values = v_star - v_null
        if s.c_keep is not None:
            values = spare(values, self._keep_directions(attn, v_null, q.dtype), s.columns, s.keep_share)
        if s.recording:
            s.recorded[self.name] = token_gains(content, m_star, values, s.columns).detach().float().cpu()
        if s.active("cross"):
            out[rows] = base + projection_term(content, m_star, values, s.columns, s.weights().to(q))
        return out

    def _keep_directions(self, attn, v_null: torch.Tensor, dtype) -> torch.Tensor:
        """(h, d, K) orthonormal per head: the span of the keep words' values relative to the empty prompt's rows
        at the same positions."""
        s = self.session
        v_keep = _heads(attn, attn.to_v(s.c_keep.to(dtype)))[0] - v_null[:, s.keep_positions]
        return span_basis(v_keep).to(dtype)

    def _base(self, attn, q, k, v, mask, out: torch.Tensor) -> torch.Tensor:
        """The prompt rows' output before the inhibitor: fast mode, the row's own; parity, branch 0's (its map
        copied); with `parity_rows`, branch 0's map read through the alignment over the row's own values."""
        rows, partners = (list(side) for side in zip(*self.session.pairs))
        if partners[0] is None:
            return out[rows]
        if self.session.reads is None:
            return out[partners]
        return read_through(_map(attn, q, k, mask, partners), v[rows], self.session.reads)


def projection_term(content: torch.Tensor, m_star: torch.Tensor, values: torch.Tensor, columns: list[int],
                    weights: torch.Tensor) -> torch.Tensor:
    """erasekit's inhibitor: w · (the part of the row's content along the concept's direction, where positive).

    content (P, h, n, d): the row's output minus the empty prompt's at the same queries; the concept's direction
    per query a = Σ_i |w_i| M*_i (V(c*_i) − V(c_∅,i)) over E's tokens (V relative to the empty prompt's rows, so
    what every prompt shares is not inhibited); its coefficient g = max(0, ⟨content, a⟩ / ⟨a, a⟩) is the
    concept's growth at that query, 0 where it is absent (the prompt does not carry the concept). Returns
    w̄ · g · a, w̄ = the mean w over E's tokens: w = −1 removes the concept's component, w < −1 pushes past it."""
    magnitude = weights.abs()[:, None, None, :]  # (P, 1, 1, E)
    direction = (m_star * magnitude) @ values[:, columns]  # (P, h, n, d)
    return weights.mean(-1)[:, None, None, None] * _gain(content, direction) * direction


def token_gains(content: torch.Tensor, m_star: torch.Tensor, values: torch.Tensor, columns: list[int]
                ) -> torch.Tensor:
    """(P, E): each E token's gain max(0, ⟨content, a_i⟩ / ⟨a_i, a_i⟩), a_i = M*_i (V(c*_i) − V(c_∅,i)), averaged
    over heads and queries — how much of the concept the row carries: the scale adapter's features with the
    projection inhibitor (M*'s mean, the paper's feature, is the same for every ShapeWorld prompt)."""
    directions = m_star.unsqueeze(-1) * values[:, columns].unsqueeze(1)  # (P, h, n, E, d)
    return _gain(content.unsqueeze(-2), directions).squeeze(-1).mean(dim=(1, 2))


def span_basis(rows: torch.Tensor) -> torch.Tensor:
    """(h, d, K): per head, orthonormal columns spanning the K rows of `rows` (h, K, d); a column is zero where its
    row adds nothing new (a repeated word), whose QR column would be an arbitrary direction."""
    basis, r = torch.linalg.qr(rows.transpose(-1, -2).float())
    scale = r.diagonal(dim1=-2, dim2=-1).abs()
    return basis * (scale > 1e-5 * scale.amax(-1, keepdim=True).clamp_min(1e-12))[..., None, :]


def spare(values: torch.Tensor, basis: torch.Tensor, columns: list[int], share: float) -> torch.Tensor:
    """E's value rows (h, L, d) with `share` of their component in the keep words' span (`basis`, (h, d, K)
    orthonormal) taken out, so the inhibitor removes less of what the prompt draws beside the concept. Why not all
    of it: a style's direction lies largely in its subjects' span (ShapeWorld: sparing all of the shapes' span
    leaves the style in 34/80 images at w = −1.75; half of it keeps every shape and erases at w = −2)."""
    part = values[:, columns]
    spared = part - share * (part @ basis) @ basis.transpose(-1, -2)
    return torch.cat([values[:, :columns[0]], spared, values[:, columns[-1] + 1:]], dim=1)


def _gain(content: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """max(0, ⟨content, direction⟩ / ⟨direction, direction⟩) over the last dimension, kept as size 1."""
    return ((content * direction).sum(-1, keepdim=True)
            / (direction * direction).sum(-1, keepdim=True).clamp_min(1e-12)).clamp_min(0)


def _map(attn, q, k, mask, rows: list[int]) -> torch.Tensor:
    """The attention map (rows, heads, queries, keys) of the batch rows `rows`."""
    logits = q[rows] @ k[rows].transpose(-1, -2) * attn.scale
    return (logits if mask is None else logits + mask[rows]).softmax(-1)


def _bias(mask: torch.Tensor, dtype) -> torch.Tensor:
    """An attention mask as an additive bias (a boolean one: True attends)."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
