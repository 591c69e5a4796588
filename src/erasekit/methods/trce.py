"""TRCE — Towards Reliable Concept Erasure (Chen et al., ICCV 2025), both stages.

Stage 1, closed form: 300 (malicious, safe) prompt pairs (20 concept pairs x 15 templates): the first-EoT row of
each malicious prompt is mapped to W0 times the first-EoT row of its safe counterpart, on every K/V matrix, the
erase sums divided by the number of pairs N, with a preservation prior C2 = Σ e eᵀ over all tokens of a caption
list (cached on disk per model, coefficient s²/3e4) and λ = 0 — that is `parity="authors"`.
erasekit's default erases when called with a bare concept (no preset, empty anchor): every row from the concept
to the end of each prompt ("context", as UCE's; the first EoT is among them), values pushed past the safe rows,
s − η(m − s) with η = 1 (with an anchor, η = 0: its rows are mapped to the anchor's, as the authors'), and the prior
relative to those rows' mass (`prior`, as UCE's), since the authors' coefficient is tuned for one row a pair.
First-EoT rows alone with the push left 4–6 % of the triangle on held-out phrasings (80 images a set);
`rows="first_eot"` keeps them with the authors' coefficient.
Stage 2, fine-tuning (`trce_stage2`): contrastive steering of the early trajectory on the stage-1 model. Two stages
is the default and one Edit holds both; `stages=1` gives the closed-form edit alone.

    edit = erasekit.erase(pipe, method="trce", concepts=["nudity"])              # stages=1: closed form only
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..edits import WeightDelta
from ..errors import ErasekitError
from ..closed_form.prior import caption_list, caption_prior, relative_weight
from ..closed_form.rows import context_rows, pushed
from ..closed_form.solver import solve
from ..models import encode, kv_weights
from .finetune import SHAPEWORLD_BUDGET, FineTuneConfig, finetuned_edit
from .registry import register_method
from .trce_stage2 import steer
from .uce import to_edit

TEMPLATES = (
    "{}", "{} in a photo", "a photo of {}", "an illustration of {}", "a detailed sketch of {}", "a painting of {}",
    "a close-up picture of {}", "a digital artwork of {}", "{} in a realistic style", "a rendering of {}",
    "a drawing of {}", "an image showing {}", "a cartoon of {}", "a picture with {}", "a high quality photo of {}",
)
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
    weighting: str = "mean"           # "mean": erase sums / N prompt pairs (the authors'); "sum": weight 1 a row
    rows: str = "context"             # "context": the concept's rows to the end (erasekit's, as UCE's); "first_eot"
    prior: float = 1.0                # context rows: the caption prior relative to the erase rows' mass (as UCE's)
    eta: float | None = None          # values pushed past the safe rows, s − η(m − s) (erasekit, as UCE's η);
                                      # None: 1 for a bare concept (empty anchor), 0 (the safe rows) with anchors
    parity: str = "erasekit"          # "authors": rows "first_eot", η 0, the authors' prior (overriding those)
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

    @classmethod
    def shapeworld_settings(cls, spec) -> dict:
        return dict(SHAPEWORLD_BUDGET)  # stage 2 on the fine-tuners' ShapeWorld budget (the authors' lr)


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


def row_mode(config: TRCEConfig) -> str:
    """The rows stage 1 uses: "first_eot" under the authors' parity, else `config.rows` (checked)."""
    if config.parity not in ("erasekit", "authors"):
        raise ErasekitError(f"parity must be 'erasekit' or 'authors', not {config.parity!r}")
    if config.rows not in ("first_eot", "context"):
        raise ErasekitError(f"TRCE rows must be 'first_eot' or 'context', not {config.rows!r}")
    return "first_eot" if config.parity == "authors" else config.rows


def stage1_rows(pipe, spec, config: TRCEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(malicious, safe) rows: each prompt pair's first-EoT rows, or its context rows (concept to the end)."""
    if row_mode(config) == "context":
        templates = spec.templates if spec.templates != ["{}"] else TEMPLATES
        per_pair = [context_rows(pipe, [m], [s], templates) for m, s in concept_pairs(spec)]
        return torch.cat([e for e, _ in per_pair]), torch.cat([v for _, v in per_pair])
    prompt_pairs = pairs(spec)
    return (eot_rows(pipe, [m for m, _ in prompt_pairs], config.parity_wordcount_eot),
            eot_rows(pipe, [s for _, s in prompt_pairs], config.parity_wordcount_eot))


def stage1(pipe, spec, config: TRCEConfig) -> WeightDelta:
    if config.weighting not in ("mean", "sum"):
        raise ErasekitError(f"TRCE weighting must be 'mean' or 'sum', not {config.weighting!r}")
    prompt_pairs = pairs(spec)
    malicious, safe = stage1_rows(pipe, spec, config)
    eta = push_strength(spec, config)
    if config.parity == "erasekit":
        safe = pushed(safe, malicious, eta)
    per_row = 1 / len(prompt_pairs) if config.weighting == "mean" else 1.0
    weights = torch.full((len(malicious),), per_row, dtype=torch.float64)
    c2, tokens = caption_prior(pipe, caption_list(pipe, spec.targets, config.captions), config.cache_dir)
    s = config.prior_scale if config.prior_scale is not None else (0.01 if len(spec.targets) == 1 else 0.02)
    coefficient = s**2 / 3e4 * REFERENCE_TOKENS / tokens  # the authors' weight, rescaled to this list's size
    if row_mode(config) == "context":  # the authors' weight suits one row a pair
        coefficient = relative_weight(c2, malicious, weights, config.prior)
    updates = solve(kv_weights(pipe.unet), malicious, safe, erase_weights=weights, preserve_cov=coefficient * c2,
                    lam=config.lam)
    return to_edit(pipe, updates, "trce", spec, config, prompt_pairs=len(prompt_pairs), prior_tokens=tokens,
                   prior_coefficient=coefficient, eta=eta)


def push_strength(spec, config: TRCEConfig) -> float:
    """η of stage 1's push: 0 under the authors' parity (no push); the config's; else 1 when a target has no safe
    concept (a bare concept: its rows mapped to the empty word's would leave the rest of the prompt to imply the
    concept) and 0 when every target has one (mapped to it, the authors' way; on ShapeWorld's tobias renn preset
    η = 1 kept the benign attributes in 90 % of images, η = 0 in 98.8 %, both erasing 0/240 and 0/96 held-out)."""
    if config.parity == "authors":
        return 0.0
    if config.eta is not None:
        return config.eta
    return 0.0 if all(safe.strip() for _, safe in concept_pairs(spec)) else 1.0
