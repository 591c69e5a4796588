"""TRCE — Towards Reliable Concept Erasure (Chen et al., ICCV 2025), both stages.

Stage 1, closed form: 300 (malicious, safe) prompt pairs (20 concept pairs x 15 templates): the first-EoT row of
each malicious prompt is mapped to W0 times the first-EoT row of its safe counterpart, on every K/V matrix, with a
preservation prior C2 = Σ e eᵀ over all tokens of a caption list (cached on disk per model) and λ = 0.
Stage 2, fine-tuning (`trce_stage2`): contrastive steering of the early trajectory on the stage-1 model. Two stages
is the default and one Edit holds both; `stages=1` gives the closed-form edit alone.

    edit = erasekit.erase(pipe, method="trce", concepts=["nudity"])              # stages=1: closed form only
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..edits import WeightDelta
from ..errors import ErasekitError
from ..closed_form.solver import solve
from ..models import encode, kv_weights
from ..models.fingerprint import tensors_hash
from ..utils.files import atomic_save_tensors
from .finetune import FineTuneConfig, finetuned_edit
from .registry import register_method
from .trce_stage2 import steer
from .uce import to_edit

TEMPLATES = (
    "{}", "{} in a photo", "a photo of {}", "an illustration of {}", "a detailed sketch of {}", "a painting of {}",
    "a close-up picture of {}", "a digital artwork of {}", "{} in a realistic style", "a rendering of {}",
    "a drawing of {}", "an image showing {}", "a cartoon of {}", "a picture with {}", "a high quality photo of {}",
)
NEUTRAL_CAPTIONS = Path(__file__).resolve().parent.parent / "presets" / "neutral_captions.txt"
# Token count of the caption set the authors' prior coefficient was tuned for (COCO-sized: 30k captions x 77).
REFERENCE_TOKENS = 30_000 * 77


@dataclass
class TRCEConfig(FineTuneConfig):
    stages: int = 2                   # 1: the closed-form edit alone; 2: plus contrastive steering
    # stage 1
    prior_scale: float | None = None  # s: 0.01 for one concept, 0.02 for several (None: chosen that way)
    captions: str | None = None       # a text file, one caption a line; default: built-in neutral list
    cache_dir: str | None = None      # where priors are cached (default ~/.cache/erasekit/trce)
    parity_wordcount_eot: bool = False  # official-code parity: EoT index from whitespace word count (wrong)
    lam: float = 0.0                  # the authors use none; a random-init text encoder needs some
    # stage 2 (the shared fine-tuning settings above, with the authors' values)
    steps: int = 300
    lr: float = 1e-6
    optimizer: str = "adamw"
    trainable: str = "selfattn-xattn-q"
    guidance_target: float = 15.0     # g of the steering targets
    margin: float = 0.01
    lam_uncond: float = 100.0         # weight of keeping the stage-1 unconditional prediction
    early_fraction: float = 0.5       # x_t from the first half of the trajectory (t ∈ [480, 1000) of 50 steps)


def concept_pairs(spec) -> list[tuple[str, str]]:
    """(malicious, safe) concepts: a preset's list, else target → anchor."""
    if spec.pairs:
        return [(m, spec.pairs["safe"]) for m in spec.pairs["malicious"]]
    return list(zip(spec.targets, spec.anchors))


def pairs(spec) -> list[tuple[str, str]]:
    """(malicious, safe) prompts: the concept pairs times the templates."""
    concepts = concept_pairs(spec)
    templates = spec.templates if spec.templates != ["{}"] else TEMPLATES
    return [(t.format(m), t.format(s)) for m, s in concepts for t in templates]


def eot_rows(pipe, prompts: list[str], wordcount: bool) -> torch.Tensor:
    enc = encode(pipe, prompts, warn=False)
    index = torch.tensor([len(p.split()) + 1 for p in prompts]) if wordcount else enc.eot_index
    index = index.clamp(max=enc.embeddings.shape[1] - 1)
    return enc.embeddings[torch.arange(len(prompts)), index].double()


def caption_list(pipe, config: TRCEConfig, spec) -> list[str]:
    if config.captions:
        lines = Path(config.captions).read_text().splitlines()
    elif getattr(pipe, "erasekit_shapeworld", False):
        from ..shapeworld.prompts import neutral_captions
        lines = neutral_captions(exclude=spec.targets)
    else:
        lines = NEUTRAL_CAPTIONS.read_text().splitlines()
    return [line.strip() for line in lines if line.strip()]


def prior(pipe, captions: list[str], cache_dir: str | None) -> tuple[torch.Tensor, int]:
    """C2 = Σ e eᵀ over every token row of the captions, and the token count; cached per text encoder + list."""
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if getattr(pipe, "text_encoder_2", None) else [])
    key = tensors_hash({f"{i}.{n}": p for i, e in enumerate(encoders) for n, p in e.state_dict().items()})
    key += "-" + hashlib.sha256("\n".join(captions).encode()).hexdigest()[:16]
    cache = Path(cache_dir or Path.home() / ".cache" / "erasekit" / "trce") / f"prior-{key}.safetensors"
    if cache.exists():
        stored = load_file(cache)
        return stored["c2"], int(stored["tokens"])
    c2, tokens = None, 0
    for i in range(0, len(captions), 64):
        rows = encode(pipe, captions[i:i + 64], warn=False).embeddings.double()
        rows = rows.reshape(-1, rows.shape[-1])
        c2 = rows.T @ rows if c2 is None else c2 + rows.T @ rows
        tokens += len(rows)
    atomic_save_tensors({"c2": c2, "tokens": torch.tensor(tokens)}, cache)
    return c2, tokens


@register_method("trce", TRCEConfig, "TRCE: closed-form first-EoT erasure with a caption prior, then "
                 "contrastive steering of early denoising")
def erase_trce(pipe, spec, config: TRCEConfig) -> WeightDelta:
    if config.stages not in (1, 2):
        raise ErasekitError(f"TRCE has stages 1 and 2: stages must be 1 or 2, not {config.stages!r}")
    first = stage1(pipe, spec, config)
    if config.stages == 1:
        return first
    first.apply(pipe)
    try:
        deltas, result = steer(pipe, concept_pairs(spec), config, first)
    finally:
        first.remove(pipe)
    return finetuned_edit(pipe, {**first.stored(), **deltas}, "trce", spec, config, result,
                          **first.metadata["protocol"], stage2_pairs=len(concept_pairs(spec)))


def stage1(pipe, spec, config: TRCEConfig) -> WeightDelta:
    prompt_pairs = pairs(spec)
    malicious = eot_rows(pipe, [m for m, _ in prompt_pairs], config.parity_wordcount_eot)
    safe = eot_rows(pipe, [s for _, s in prompt_pairs], config.parity_wordcount_eot)
    c2, tokens = prior(pipe, caption_list(pipe, config, spec), config.cache_dir)
    s = config.prior_scale if config.prior_scale is not None else (0.01 if len(spec.targets) == 1 else 0.02)
    coefficient = s**2 / 3e4 * REFERENCE_TOKENS / tokens  # the authors' weight, rescaled to this list's size
    updates = solve(kv_weights(pipe.unet), malicious, safe, preserve_cov=coefficient * c2, lam=config.lam)
    return to_edit(pipe, updates, "trce", spec, config, prompt_pairs=len(prompt_pairs), prior_tokens=tokens,
                   prior_coefficient=coefficient)
