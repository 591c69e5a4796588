"""EIUP / GIE — erasing implicit unsafe concepts with growth inhibitors (Chen et al., ICLR 2025), training-free.

The erase target E is appended to the prompt (P' = P + E, E's tokens just before P's EoT, E encoded on its own).
Branch 0 runs the plain prompt P; branch 1 runs P'. In branch 1's cross-attention, for the first 80 % of steps, the
P tokens keep branch 0's attention map and each E token i adds w_i · M*_i · V(c*_i), M* = softmax(Q K(c*)ᵀ/√d);
w < 0 inhibits the concept. For the first 40 % of steps branch 1's low-resolution self-attention maps are branch 0's.

Parity mode runs both branches in one batch: prompt embeddings [P, P'] with equal seeds, so classifier-free
guidance gives [∅, ∅, P, P'] and the processors pair each P' row with its P row. Copying branch 0's map for the P
tokens makes branch 1's P part equal branch 0's output, so branch 1 = branch 0 + Σ_i w_i M*_i V(c*_i).
Fast mode (this project's design) drops branch 0: the P part is the row's own attention over Enc(P), so no second
branch runs and the cost is one extra K/V projection of Enc(E) per layer. Fast mode is a pure processor edit and
works in any standard pipeline call (text-to-image, image-to-image, SDXL); parity mode needs the two-branch batch,
which erasekit's sampler builds while the edit is applied (a plain `pipe(...)` call runs it as fast mode).

w is either fixed (EIUP v1; `strength`) or predicted per image and E token by the scale adapter from the token's
mean attention in each cross-attention layer at the first step (one extra UNet pass; see `gie_adapter`).

The official code differs in its prompt rows, its step windows and its scale adapter; each is an option
(`parity_rows`, `parity_schedule`, the adapter's kind), described with the reasons in `gie_parity`.

    edit = erasekit.erase(pipe, "gie", ["nude"], strength=-1.0)
    edit.apply(pipe); images = erasekit.generate(pipe, ["a photo of a person on the beach"], seeds=[0])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..concepts import ConceptError
from ..edits import SamplingSession, SamplingTimeEdit, register_session
from ..errors import EditError, ErasekitError
from ..models import encode
from ..models.fingerprint import fingerprint
from ..models.layers import find_cross_attention, in_execution_order
from ..sampling import prompt_per_seed, sample, sampler_defaults
from .gie_parity import active_steps, joint_contexts, read_through
from .gie_scale import ScaleAdapter, load_adapter, shipped_adapter
from .registry import register_method


@dataclass
class GIEConfig:
    strength: float = -1.0          # w: fixed value (EIUP v1); negative suppresses
    cross_fraction: float = 0.8     # share of steps with the copied map and the injected term
    self_fraction: float = 0.4      # share of steps with branch 0's low-resolution self-attention maps
    fast: bool = False              # one branch (this project's fast mode) instead of two (parity)
    low_resolution_divisor: int = 4  # self-attention at ≤ sample_size / divisor per side counts as low resolution
    target: str = ""                # E; empty: the concept's targets joined by ", "
    adapter: str = ""               # scale adapter folder (`erasekit gie-adapter`), or "shipped" for ShapeWorld's
                                    # adapter of this concept; empty: the fixed `strength`
    parity_rows: bool = False       # the official code's rows and map copy from P's joint encoding with E
    parity_schedule: bool = False   # the official code's int() step windows (see gie_parity)


def splice(pipe, prompt: str, target: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(P' embedding (L, d), Enc(E) (L, d), positions of E's tokens in P'). P's SoT and words keep Enc(P)'s rows,
    E's words take Enc(E)'s rows, and P's EoT and padding follow, shifted."""
    spliced, c_star, positions = splice_many(pipe, [prompt], target)
    return spliced[0], c_star, positions[0]


def splice_many(pipe, prompts: list[str], target: str, plain=None):
    """`splice` for several prompts with one text-encoder call each for P and E; `plain`: encode(pipe, prompts)
    when the caller has it already. Returns (P' embeddings (n, L, d), Enc(E) (L, d), E's positions per prompt)."""
    plain = plain if plain is not None else encode(pipe, prompts)
    c_star, n_target = encode_target(pipe, target)
    length = plain.embeddings.shape[1]
    rows, positions = [], []
    for prompt, c0, eot in zip(prompts, plain.embeddings, plain.eot_index.tolist()):
        n_prompt = int(eot) - 1
        room = length - 2 - n_prompt
        if n_target > room:
            raise ConceptError(f"erase target {target!r} needs {n_target} tokens but only {max(room, 0)} fit "
                               f"after the prompt {prompt!r} (limit {length})")
        rows.append(torch.cat([c0[:n_prompt + 1], c_star[1:n_target + 1], c0[n_prompt + 1:length - n_target]]))
        positions.append(list(range(n_prompt + 1, n_prompt + 1 + n_target)))
    return torch.stack(rows), c_star, positions


def encode_target(pipe, target: str) -> tuple[torch.Tensor, int]:
    """(Enc(E) (L, d), number of E's word tokens); refuses a target that tokenises to nothing."""
    star = encode(pipe, [target], warn=False)
    n = int(star.eot_index[0]) - 1
    if n == 0:
        raise ConceptError(f"erase target {target!r} tokenises to nothing")
    return star.embeddings[0], n


@register_session("gie")
class GIESession(SamplingSession):
    """Shared state of the GIE processors: step, branch layout, Enc(E), per-image per-token strengths."""

    def __init__(self, edit, pipe):
        super().__init__(edit, pipe)
        self.layers = "cross" if self.config["fast"] else "all"
        self.target = self.config["target"]
        self.order = [layer.name for layer in in_execution_order(find_cross_attention(pipe.unet))]
        self.adapter = ScaleAdapter.from_tensors(edit.tensors, kind=self.config.get("adapter_kind", "erasekit")) \
            if self.config.get("adapter") else None
        self.step, self.total_steps = 0, 1
        self.pairs: list[tuple[int, int | None]] = []  # (branch-1 row, its branch-0 row or None) in the UNet batch
        self.explicit_pairs: list[tuple[int, int | None]] | None = None
        self.reads: torch.Tensor | None = None  # parity_rows: (pairs, L) alignment of P' to P (`gie_parity`)
        self.row_weights: torch.Tensor | None = None  # (pairs, E tokens) from the adapter
        self.recorded: dict[str, torch.Tensor] = {}   # layer → (pairs, E tokens) mean attention at the first step
        self.probing = False
        self.recording = False  # during the first UNet pass of a run (the probe pass when there is an adapter)
        self.generate = None if self.config["fast"] else self.two_branch_generate

    def check(self) -> None:
        c_star, n = encode_target(self.pipe, self.target)
        self.c_star = c_star[None].to(self.pipe.unet.device)
        self.columns = list(range(1, n + 1))
        if self.adapter is not None and self.adapter.layers != len(self.order):
            raise EditError(f"{self.edit}: its scale adapter was trained for {self.adapter.layers} cross-attention "
                            f"layers but this UNet has {len(self.order)}")

    def targets(self) -> dict[str, object]:
        """Cross-attention, and in parity mode the low-resolution self-attention; the rest keep their processors."""
        return {name: module for name, module in super().targets().items()
                if getattr(module, "is_cross_attention", False)
                or (not self.config["fast"] and self._low_resolution(name))}

    def _low_resolution(self, name: str) -> bool:
        unet = self.pipe.unet
        return _resolution(unet, name) <= unet.config.sample_size // self.config["low_resolution_divisor"]

    def processor(self, name: str, module):
        return GIEAttention(self, name, cross=bool(getattr(module, "is_cross_attention", False)))

    # Sampling-time control.
    def active(self, window: str) -> bool:
        """Whether the "cross" or "self" window covers the current step."""
        return self.step < active_steps(self.config[f"{window}_fraction"], self.total_steps, window == "cross",
                                        self.config.get("parity_schedule", False))

    def weights(self) -> torch.Tensor:
        """(pairs, E tokens) strengths for the current batch."""
        if self.row_weights is not None:
            return self.row_weights
        return torch.full((len(self.pairs), len(self.columns)), float(self.config["strength"]))

    def on_unet_call(self, args, kwargs):
        if self.probing:
            return None
        first = self.advance(args, kwargs)
        sample = args[0] if args else kwargs["sample"]
        if self.explicit_pairs is not None:
            self.pairs = self.explicit_pairs
        else:
            self.pairs = [(row, None) for row in range(sample.shape[0])[self.guided_rows(sample)]]
        self.recording = first
        if first:
            self.recorded, self.row_weights = {}, None
            if self.adapter is not None:
                self._probe(args, kwargs)
                self.recording = False
        return None

    @torch.no_grad()
    def _probe(self, args, kwargs) -> None:
        """One extra UNet pass at the first step, with w = 0 (maps still copied; w = +1 for the authors' kind),
        records the E tokens' attention exactly as the adapter's training run at that w did; the adapter maps it
        to w."""
        self.probing = True
        self.row_weights = torch.full((len(self.pairs), len(self.columns)), self.adapter.probe_strength)
        try:
            self.pipe.unet(*args, **kwargs)
        finally:
            self.probing = False
        self.row_weights = self.adapter.strength(self.features().float()).to(self.c_star.dtype)

    def features(self) -> torch.Tensor:
        """(pairs, E tokens, layers): mean attention of each E token per cross-attention layer, execution order."""
        missing = [name for name in self.order if name not in self.recorded]
        if missing:
            raise EditError(f"no attention was recorded for {missing[:3]}...: run a generation first")
        return torch.stack([self.recorded[name] for name in self.order], dim=-1)

    def two_branch_generate(self, prompts, seeds, *, prompt_embeds=None, batch_size: int = 32, progress=True,
                            **options):
        """Parity mode: each (prompt, seed) runs as the pair [P, P'] in one batch; returns branch 1's images."""
        from tqdm.auto import tqdm
        if prompt_embeds is not None:  # no text to splice E into: one branch, as fast mode
            return sample(self.pipe, None, seeds, prompt_embeds=prompt_embeds, batch_size=batch_size,
                          progress=progress, **options)
        prompts = prompt_per_seed(prompts, seeds)
        guidance = options.get("guidance")
        cfg = (sampler_defaults(self.pipe)[1] if guidance is None else guidance) > 1
        plain = encode(self.pipe, prompts)
        spliced, c_star, _ = splice_many(self.pipe, prompts, self.target, plain)  # refuses a misfit first
        reads = None
        if self.config.get("parity_rows"):
            spliced, reads = joint_contexts(self.pipe, prompts, self.target, plain, c_star, len(self.columns))
        images, chunk = [], max(1, batch_size // 2)
        bar = tqdm(total=len(seeds), desc="generate (GIE, two branches)", unit="img", disable=not progress)
        try:
            for start in range(0, len(prompts), chunk):
                part = slice(start, start + chunk)
                n = len(prompts[part])
                offset = 2 * n if cfg else 0  # classifier-free guidance puts the uncond rows first
                self.explicit_pairs = [(offset + 2 * k + 1, offset + 2 * k) for k in range(n)]
                self.reads = None if reads is None else reads[part]
                embeds = torch.stack([plain.embeddings[part], spliced[part]], dim=1).flatten(0, 1)  # P, P', ...
                pooled = None if plain.pooled is None else plain.pooled[part].repeat_interleave(2, dim=0)
                out = sample(self.pipe, None, [s for s in seeds[part] for _ in (0, 1)], prompt_embeds=embeds,
                             pooled_prompt_embeds=pooled, batch_size=2 * n, progress=False, **options)
                images += out[1::2]
                bar.update(n)
        finally:
            self.explicit_pairs = self.reads = None
            bar.close()
        return images


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

    def __init__(self, session: GIESession, name: str, cross: bool):
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


def _resolution(unet, module_name: str) -> int:
    """Latent side length at a module, from its block's position (down blocks halve, up blocks double)."""
    parts = module_name.split(".")
    levels = len(unet.config.block_out_channels)
    if parts[0] == "down_blocks":
        return unet.config.sample_size >> int(parts[1])
    if parts[0] == "up_blocks":
        return unet.config.sample_size >> (levels - 1 - int(parts[1]))
    return unet.config.sample_size >> (levels - 1)


@register_method("gie", GIEConfig, "EIUP/GIE growth inhibitors: training-free, at sampling time")
def erase_gie(pipe, spec, config: GIEConfig) -> SamplingTimeEdit:
    target = config.target or ", ".join(spec.targets)
    encode_target(pipe, target)  # refuses a target that tokenises to nothing before anything is written
    if config.parity_rows and config.fast:
        raise ErasekitError("parity_rows reads branch 0's maps: it needs parity mode (fast=false)")
    tensors, extra = {}, {}
    if config.adapter:
        adapter = load_adapter(shipped_adapter(spec) if config.adapter == "shipped" else config.adapter)
        tensors, extra = adapter.to_tensors(), {"adapter_kind": adapter.kind}
    return SamplingTimeEdit(tensors, method="gie", concepts=spec.targets, fingerprint=fingerprint(pipe, []),
                            config={"session": "gie", **asdict(config), **extra, "target": target,
                                    "spec": spec.to_dict()})
