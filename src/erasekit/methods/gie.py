"""EIUP / GIE — erasing implicit unsafe concepts with growth inhibitors (Chen et al., ICLR 2025), training-free.

The erase target E is appended to the prompt (P' = P + E, E's tokens just before P's EoT, E encoded on its own).
Branch 0 runs the plain prompt P; branch 1 runs P'. In branch 1's cross-attention, for the first 80 % of steps, the
P tokens keep branch 0's attention map and each E token i adds w_i · M*_i · V(c*_i), M* = softmax(Q K(c*)ᵀ/√d);
w < 0 inhibits the concept. For the first 40 % of steps branch 1's low-resolution self-attention maps are branch 0's.

Parity mode runs both branches in one batch of a standard pipeline: prompt embeddings [P, P'] with equal seeds,
so classifier-free guidance gives [∅, ∅, P, P'] and the processors pair each P' row with its P row. Copying
branch 0's map for the P tokens makes branch 1's P part equal branch 0's output, so
branch 1 = branch 0 + Σ_i w_i M*_i V(c*_i). Fast mode (this project's design) drops branch 0: the P part is
branch 1's own attention over Enc(P), so no second branch runs and the cost is one extra K/V projection per layer.
Defaults from the paper: 40 steps, CFG 7.5; here the model's sampler defaults unless given.

    controller = GIEController(pipe, target="nude", strength=-1.0)
    images = controller.generate(["a photo of a person on the beach"], seeds=[0])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..concepts import ConceptError
from ..models import encode
from ..models.layers import find_cross_attention, in_execution_order


@dataclass
class GIEConfig:
    strength: float = -1.0          # w: fixed value (EIUP v1); negative suppresses
    cross_fraction: float = 0.8     # share of steps with the copied map and the injected term
    self_fraction: float = 0.4      # share of steps with branch 0's low-resolution self-attention maps
    fast: bool = False              # one branch (this project's fast mode) instead of two (parity)
    low_resolution_divisor: int = 4  # self-attention at ≤ sample_size / divisor per side counts as low resolution


def splice(pipe, prompt: str, target: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(P' embedding (L, d), Enc(E) (L, d), positions of E's tokens in P'). P's SoT and words keep Enc(P)'s rows,
    E's words take Enc(E)'s rows, and P's EoT and padding follow, shifted."""
    plain, star = encode(pipe, [prompt]), encode(pipe, [target], warn=False)
    length = plain.embeddings.shape[1]
    n_prompt, n_target = int(plain.eot_index[0]) - 1, int(star.eot_index[0]) - 1
    if n_target == 0:
        raise ConceptError(f"erase target {target!r} tokenises to nothing")
    room = length - 2 - n_prompt
    if n_target > room:
        raise ConceptError(f"erase target {target!r} needs {n_target} tokens but only {max(room, 0)} fit after "
                           f"the prompt {prompt!r} (limit {length})")
    c0, c_star = plain.embeddings[0], star.embeddings[0]
    spliced = torch.cat([c0[:n_prompt + 1], c_star[1:n_target + 1], c0[n_prompt + 1:length - n_target]])
    return spliced, c_star, list(range(n_prompt + 1, n_prompt + 1 + n_target))


class GIEController:
    """Shared state of the GIE processors: step count, branch layout, Enc(E), per-token strengths."""

    def __init__(self, pipe, target: str, config: GIEConfig | None = None, strengths: torch.Tensor | None = None):
        self.pipe, self.target, self.config = pipe, target, config or GIEConfig()
        self.layers = in_execution_order(find_cross_attention(pipe.unet))
        if not self.layers:
            raise ConceptError("this UNet has no cross-attention layers for GIE to act on")
        self.strengths = strengths  # (n_target,) from the adapter; None uses config.strength for every token
        self.step, self.total_steps = 0, 1
        self.c_star: torch.Tensor | None = None   # (batch, L, d) Enc(E) per branch-1 image
        self.target_columns: list[int] = []       # E's word positions within Enc(E)
        self.recorded: dict[str, list] = {}  # layer → mean attention of E's tokens at the first step, per image
        self.pairs: list[tuple[int, int | None]] = []  # (branch-1 row, its branch-0 row or None) in the UNet batch

    def weights(self) -> torch.Tensor:
        n = len(self.target_columns)
        return self.strengths if self.strengths is not None else torch.full((n,), self.config.strength)

    def active(self, fraction: float) -> bool:
        return self.step < fraction * self.total_steps

    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None,
                 guidance: float | None = None, batch_size: int = 16) -> list:
        """Branch 1's images, one per (prompt, seed)."""
        from ..generation import sampler_defaults
        default_steps, default_guidance = sampler_defaults(self.pipe)
        steps, guidance = steps or default_steps, default_guidance if guidance is None else guidance
        hook = self.pipe.unet.register_forward_hook(lambda *_: self._advance())
        previous = install(self)
        try:
            images = []
            for start in range(0, len(prompts), batch_size):
                images += self._chunk(prompts[start:start + batch_size], seeds[start:start + batch_size], steps,
                                      guidance)
            return images
        finally:
            hook.remove()
            self.pipe.unet.set_attn_processor(previous)

    def _advance(self) -> None:
        self.step += 1

    def _chunk(self, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> list:
        from ..generation import generate
        spliced = [splice(self.pipe, p, self.target) for p in prompts]
        self.c_star = torch.stack([c_star for _, c_star, _ in spliced])
        self.target_columns = list(range(1, len(spliced[0][2]) + 1))
        n = len(prompts)
        plain = encode(self.pipe, prompts).embeddings
        offset = lambda rows: rows if guidance > 1 else 0  # noqa: E731  CFG puts the uncond rows first
        if self.config.fast:
            embeds, run_seeds = plain, seeds
            self.pairs = [(offset(n) + k, None) for k in range(n)]
        else:
            embeds = torch.stack([e for k in range(n) for e in (plain[k], spliced[k][0])])
            run_seeds = [s for s in seeds for _ in (0, 1)]
            self.pairs = [(offset(2 * n) + 2 * k + 1, offset(2 * n) + 2 * k) for k in range(n)]
        self.step, self.total_steps, self.recorded = 0, steps, {}
        images = generate(self.pipe, None, run_seeds, steps=steps, guidance=guidance, prompt_embeds=embeds,
                          batch_size=len(run_seeds), progress=False)
        return images if self.config.fast else images[1::2]


def _heads(attn, x: torch.Tensor) -> torch.Tensor:
    """(batch, tokens, inner) → (batch, heads, tokens, head_dim)."""
    b, n, _ = x.shape
    return x.view(b, n, attn.heads, -1).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _finish(attn, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    hidden = attn.to_out[1](attn.to_out[0](hidden))
    if attn.residual_connection:
        hidden = hidden + residual
    return hidden / attn.rescale_output_factor


class GIEAttention:
    """One processor per attention module; cross-attention gets the inhibitor, low-resolution self-attention the
    copied maps. Plain attention everywhere else, so uncond rows and inactive steps are untouched."""

    def __init__(self, controller: GIEController, name: str, cross: bool, low_resolution: bool):
        self.controller, self.name, self.cross, self.low_resolution = controller, name, cross, low_resolution

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = _heads(attn, attn.to_q(hidden_states)), _heads(attn, attn.to_k(context)), \
            _heads(attn, attn.to_v(context))
        probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)
        out = probs @ v
        ctl = self.controller
        if self.cross:
            out = self._inhibit(attn, q, out)
        elif self.low_resolution and not ctl.config.fast and ctl.active(ctl.config.self_fraction):
            for row, partner in ctl.pairs:
                out[row] = probs[partner] @ v[row]  # branch 0's map, branch 1's own values
        out = _finish(attn, _merge(out), residual if not four_d else residual.view(b, c, h * w).transpose(1, 2))
        if four_d:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        return out

    def _inhibit(self, attn, q: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        ctl = self.controller
        if not ctl.active(ctl.config.cross_fraction):
            return out
        k_star = _heads(attn, attn.to_k(ctl.c_star.to(q.dtype)))
        v_star = _heads(attn, attn.to_v(ctl.c_star.to(q.dtype)))
        columns = ctl.target_columns
        weights = ctl.weights().to(q.dtype)
        out = out.clone()
        for k, (row, partner) in enumerate(ctl.pairs):
            m_star = (q[row] @ k_star[k].transpose(-1, -2) * attn.scale).softmax(-1)[:, :, columns]
            if ctl.step == 0:
                ctl.recorded.setdefault(self.name, []).append(m_star.mean(dim=(0, 1)).detach())
            base = out[partner] if partner is not None else out[row]
            out[row] = base + (m_star * weights) @ v_star[k, :, columns]
        return out


def install(controller: GIEController) -> dict:
    """Set GIE processors on every attention module of the UNet; returns the processors they replace."""
    unet = controller.pipe.unet
    low = unet.config.sample_size // controller.config.low_resolution_divisor
    previous = dict(unet.attn_processors)
    processors = {}
    for key in previous:
        module_name = key[: -len(".processor")]
        module = unet.get_submodule(module_name)
        cross = bool(getattr(module, "is_cross_attention", False))
        processors[key] = GIEAttention(controller, module_name, cross, low_resolution=_resolution(unet, module_name)
                                       <= low)
    unet.set_attn_processor(processors)
    return previous


def _resolution(unet, module_name: str) -> int:
    """Latent side length at a module, from its block's position (down blocks halve, up blocks double)."""
    top, index = module_name.split(".")[0], int(module_name.split(".")[1]) if module_name[0] != "m" else 0
    levels = len(unet.config.block_out_channels)
    if top == "down_blocks":
        return unet.config.sample_size >> index
    if top == "up_blocks":
        return unet.config.sample_size >> (levels - 1 - index)
    return unet.config.sample_size >> (levels - 1)
