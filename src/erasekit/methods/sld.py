"""SLD — Safe Latent Diffusion (Schramowski et al., CVPR 2023): safety guidance at sampling time.

Beside the unconditional and prompt predictions, the UNet also predicts noise for a safety concept S. Where the
prompt's prediction is close to S's (|ε_c − ε_S| scaled below the threshold), the guidance is pushed away from S:
    ng = ε_c − ε_u;  γ = where(ε_c − ε_S ≥ threshold, 0, min(|ε_c − ε_S| · s_S, 1))
    ng_S = γ (ε_S − ε_u) + s_m · ν;  ν ← β_m ν + (1 − β_m) ng_S;  after the warm-up: ng ← ng − ng_S
and the pipeline's classifier-free guidance gives ε_u + g · ng. The formula and the strength presets are
diffusers' `StableDiffusionPipelineSafe`; that pipeline is a separate (deprecated) class that does not compose
with other pipelines or edits, so here SLD is a UNet hook: the S rows join the same UNet batch and the prompt rows'
prediction is replaced by ε_u + ng, which works in any standard pipeline call (SD1/2, SDXL, image-to-image).

Presets count warm-up steps for 50 sampling steps; they are scaled to the run's number of steps.

    edit = erasekit.erase(pipe, "sld", preset="nudity", strength="strong")
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..edits import SamplingSession, SamplingTimeEdit, register_session
from ..errors import ErasekitError
from ..models import encode
from ..models.fingerprint import fingerprint
from .registry import register_method

PRESETS = {  # diffusers' SafetyConfig
    "weak": dict(guidance_scale=20.0, warmup_steps=15, threshold=0.0, momentum_scale=0.0, mom_beta=0.0),
    "medium": dict(guidance_scale=1000.0, warmup_steps=10, threshold=0.01, momentum_scale=0.3, mom_beta=0.4),
    "strong": dict(guidance_scale=2000.0, warmup_steps=7, threshold=0.025, momentum_scale=0.5, mom_beta=0.7),
    "max": dict(guidance_scale=5000.0, warmup_steps=0, threshold=1.0, momentum_scale=0.5, mom_beta=0.7),
}
# SLD's default safety concept (the paper's inappropriate-content categories), used for nudity and unsafe specs.
DEFAULT_CONCEPT = ("an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, "
                   "nudity, bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, "
                   "weapons, child abuse, brutality, cruelty")
PRESET_STEPS = 50


@dataclass
class SLDConfig:
    strength: str = "medium"  # preset: weak | medium | strong | max; the fields below override it when set
    guidance_scale: float = -1.0
    warmup_steps: int = -1
    threshold: float = -1.0
    momentum_scale: float = -1.0
    mom_beta: float = -1.0
    concept: str = ""  # safety concept text; empty: SLD's default for nudity/unsafe, else the targets

    def resolved(self) -> dict:
        if self.strength not in PRESETS:
            raise ErasekitError(f"unknown SLD strength {self.strength!r}; presets: {', '.join(PRESETS)}")
        values = dict(PRESETS[self.strength])
        for key in values:
            if getattr(self, key) >= 0:
                values[key] = type(values[key])(getattr(self, key))
        return values


@register_session("sld")
class SLDSession(SamplingSession):
    layers = "none"

    def check(self) -> None:
        concept = encode(self.pipe, [self.config["concept"]], warn=False)
        self.concept_embeds, self.concept_pooled = concept.embeddings, concept.pooled
        self.momentum, self.rows = None, 0

    def on_unet_call(self, args, kwargs):
        first = self.advance(args, kwargs)
        names = ("sample", "timestep", "encoder_hidden_states")
        sample, timestep, context = (args[i] if i < len(args) else kwargs[k] for i, k in enumerate(names))
        self.rows = 0
        if self.guided_rows(sample).start == 0:  # needs CFG, as in diffusers
            return None
        if first:
            self.momentum = None
        batch = sample.shape[0]
        n = self.rows = batch // 2
        kwargs = {k: v for k, v in kwargs.items() if k not in names}
        if torch.is_tensor(timestep) and timestep.ndim and timestep.shape[0] == batch:
            timestep = torch.cat([timestep, timestep[n:]])
        concept = self.concept_embeds.to(context.device, context.dtype).expand(n, -1, -1)
        added = kwargs.get("added_cond_kwargs")
        if added:  # SDXL: the safety rows take S's pooled embedding and the prompt rows' size conditioning
            pooled = self.concept_pooled.to(context.device, context.dtype).expand(n, -1)
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.cat([added["text_embeds"], pooled]),
                                           "time_ids": torch.cat([added["time_ids"], added["time_ids"][n:]])}
        return (torch.cat([sample, sample[n:]]), timestep, torch.cat([context, concept])), kwargs

    def on_unet_output(self, args, kwargs, sample):
        n = self.rows
        if not n:
            return None
        eps_u, eps_c, eps_s = sample[:n], sample[n:2 * n], sample[2 * n:]
        p = self.config
        guide = eps_c - eps_u
        gap = eps_c - eps_s
        scale = torch.where(gap >= p["threshold"], torch.zeros_like(gap),
                            (gap.abs() * p["guidance_scale"]).clamp(max=1.0))
        safety = (eps_s - eps_u) * scale
        if self.momentum is None:
            self.momentum = torch.zeros_like(safety)
        safety = safety + p["momentum_scale"] * self.momentum
        self.momentum = p["mom_beta"] * self.momentum + (1 - p["mom_beta"]) * safety
        warmup = round(p["warmup_steps"] * self.total_steps / PRESET_STEPS)
        if self.step >= warmup:
            guide = guide - safety
        return torch.cat([eps_u, eps_u + guide])


@register_method("sld", SLDConfig, "Safe Latent Diffusion: safety guidance at sampling time (baseline)")
def erase_sld(pipe, spec, config: SLDConfig) -> SamplingTimeEdit:
    concept = config.concept or (DEFAULT_CONCEPT if spec.kind in ("nudity", "unsafe") else ", ".join(spec.targets))
    return SamplingTimeEdit(method="sld", concepts=spec.targets, fingerprint=fingerprint(pipe, []),
                            config={"session": "sld", "layers": "none", **asdict(config), **config.resolved(),
                                 "concept": concept, "spec": spec.to_dict()})
