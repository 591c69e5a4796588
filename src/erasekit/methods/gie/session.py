"""GIE's session: the shared state of its processors while the edit is applied."""
from __future__ import annotations

import torch

from ...edits import SamplingSession, register_session
from ...errors import EditError
from ...models import encode
from ...models.layers import find_cross_attention, in_execution_order
from ...sampling import prompt_per_seed, sample, sampler_defaults
from .parity import active_steps, joint_contexts
from .processor import GIEAttention
from .scale import ScaleAdapter
from .splice import encode_target, splice_many


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
        self.reads: torch.Tensor | None = None  # parity_rows: (pairs, L) alignment of P' to P (`parity`)
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


def _resolution(unet, module_name: str) -> int:
    """Latent side length at a module, from its block's position (down blocks halve, up blocks double)."""
    parts = module_name.split(".")
    levels = len(unet.config.block_out_channels)
    if parts[0] == "down_blocks":
        return unet.config.sample_size >> int(parts[1])
    if parts[0] == "up_blocks":
        return unet.config.sample_size >> (levels - 1 - int(parts[1]))
    return unet.config.sample_size >> (levels - 1)
