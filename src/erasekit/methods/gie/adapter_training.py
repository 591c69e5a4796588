"""GIE's scale adapter: its training (the adapter and its files are `scale`). The authors did not release
weights; this follows their description.

For each training prompt, generate with GIE at every strength of a grid (|w| = 0, 0.5, 1, 1.25, … 4 by default)
and keep the smallest |w| at which the evaluator no longer sees the concept in any of the prompt's images (prompts
that never show it get 0; prompts it survives get the largest |w|). The features, per E token and cross-attention
layer at the first step (recorded in the |w| = 0 run, which equals the adapter's probe pass), are the concept's
gain in the row with the projection inhibitor (`processor.token_gains`) or the token's mean attention M* with the
paper's additive one; an MLP regresses |w| on them. The authors' kind (`kind="authors"`, see `scale`) records its
features in one more run at w = +1, as its probe pass does, and regresses w = −|w| with its raw output.

    erasekit gie-adapter --concept shapeworld/triangle --out adapters/triangle          # ShapeWorld, its classifier
    erasekit gie-adapter --model PATH --concept nudity --prompts prompts.csv --evaluator nudenet --out DIR
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
import torch
from tqdm.auto import tqdm

from ...detectors import Detector
from ...edits import active_session
from ...errors import ErasekitError
from ...sampling import generate
from ...shapeworld.prompts import concept_sets
from ...training import TrainingConfig, train
from . import GIEConfig, erase_gie
from .scale import ScaleAdapter, probe_strength


@dataclass
class AdapterTraining:
    grid: tuple[float, ...] = (0.0, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)  # |w| tried, ascending; steps
                                                           # of 0.25 where ShapeWorld's labels fall (1 to 1.75)
    seeds: tuple[int, ...] = (100, 101, 102, 103)          # per prompt; different from the bench's seeds
    fast: bool = False                                     # generate in GIE's fast mode instead of parity
    steps: int | None = None                               # sampler steps (default: the model's)
    iterations: int = 150                                  # regression steps (full batch, Adam); see `fit`
    lr: float = 3e-3
    seed: int = 0
    batch_size: int = 16
    kind: str = "erasekit"                                 # the scale adapter's kind (scale): or "authors"
    inhibitor: str = "projection"                          # the GIE options the adapter's w is meant for
    cross_fraction: float = 1.0
    margin: float = 1.4                                    # the fit's target: the smallest |w| found × margin


def smallest_strengths(pipe, spec, prompts: list[str], detector: Detector, cfg: AdapterTraining,
                       progress: bool = True):
    """(features (images, E tokens, layers), |w| label per image, per-prompt table). `detector` decides whether
    an image still shows the concept. The features come from the run at the kind's probe w (|w| = 0 for
    erasekit's, an extra run at w = +1 for the authors'), whose first step is what the adapter's probe pass sees."""
    if not cfg.grid or cfg.grid[0] != 0 or list(cfg.grid) != sorted(cfg.grid):
        raise ErasekitError(f"the |w| grid must be ascending and start at 0 (got {list(cfg.grid)})")
    items = [(p, s) for p in prompts for s in cfg.seeds]
    probe = probe_strength(cfg.kind)
    runs = [(-w, w) for w in cfg.grid] + ([(probe, None)] if probe else [])  # (w, |w| of the search or None)
    shown, features = {}, []  # shown: |w| → per item, concept still present
    bar = tqdm(total=len(runs) * len(items), desc="adapter: strength search", disable=not progress)
    for strength, w in runs:
        edit = erase_gie(pipe, spec, GIEConfig(strength=strength, fast=cfg.fast, inhibitor=cfg.inhibitor,
                                                   cross_fraction=cfg.cross_fraction))
        edit.apply(pipe)
        try:
            for start in range(0, len(items), cfg.batch_size):
                chunk = items[start:start + cfg.batch_size]
                images = _generate(pipe, chunk, cfg)
                if w is not None:
                    shown[w] = shown.get(w, []) + detector.present(images).tolist()
                if strength == probe:
                    features.append(active_session(pipe).features())
                bar.update(len(chunk))
        finally:
            edit.remove(pipe)
    bar.close()
    features = torch.cat(features)
    labels, table = torch.empty(len(items)), []
    for k, prompt in enumerate(prompts):
        rows = range(k * len(cfg.seeds), (k + 1) * len(cfg.seeds))
        removed = [w for w in cfg.grid if not any(shown[w][r] for r in rows)]
        label = removed[0] if removed else cfg.grid[-1]
        labels[list(rows)] = label
        table.append({"prompt": prompt, "label": label, "shown": {str(w): sum(shown[w][r] for r in rows)
                                                                  for w in cfg.grid}})
    return features, labels, table


def _generate(pipe, chunk, cfg):
    return generate(pipe, [p for p, _ in chunk], [s for _, s in chunk], steps=cfg.steps, progress=False,
                    batch_size=len(chunk))


def fit(features: torch.Tensor, labels: torch.Tensor, cfg: AdapterTraining) -> tuple[ScaleAdapter, float]:
    """Regress |w| on the features (every E token of an image gets the image's label × margin), full batch with
    Adam on the training loop; returns (adapter, MAE of its output). The authors' kind regresses w = −|w|
    unstandardised.

    Why the margin: the smallest |w| that removes the concept from a prompt's few training images sits on the
    boundary, and on new seeds about half the images survive it (measured on ShapeWorld: 55 % and 63 % of the
    bench's target images kept the concept with a margin of 1; tobias renn at the bench's seeds 0–15, 240 images:
    margin 1.25 left it in 9, 1.4 in 5, with the benign attributes kept in 95.2 % and 90.4 %).

    Why few iterations: one prompt's images differ by seed in their features far more than in their label, and
    2000 steps memorise them (training MAE 0.004): on the bench's seeds the triangle adapter's |w| then spread from
    0.76 to 3.05 and 5–10 % of target images kept the triangle; 300 steps kept it within 1.4–2.7 (none kept)."""
    torch.manual_seed(cfg.seed)
    x = features.reshape(-1, features.shape[-1]).float()
    y = cfg.margin * labels.repeat_interleave(features.shape[1]).float()
    adapter = ScaleAdapter(x.shape[1], cfg.kind)
    if cfg.kind == "authors":
        y = -y
    else:
        adapter.feature_mean.copy_(x.mean(0))
        adapter.feature_std.copy_(x.std(0).clamp_min(1e-8))
    settings = TrainingConfig(steps=cfg.iterations, lr=cfg.lr, optimizer="adam", grad_clip=0.0, seed=cfg.seed)
    train(lambda ctx: torch.nn.functional.mse_loss(adapter(x), y), dict(adapter.mlp.named_parameters()), settings,
          desc="adapter: fit", progress=False)
    with torch.no_grad():
        mae = (adapter(x) - y).abs().mean().item()
    return adapter.eval(), mae


def train_adapter(pipe, spec, prompts: list[str], detector: Detector, cfg: AdapterTraining | None = None,
                  progress: bool = True) -> tuple[ScaleAdapter, dict]:
    cfg = cfg or AdapterTraining()
    if not prompts:
        raise ErasekitError("no training prompts")
    start = time.perf_counter()
    features, labels, table = smallest_strengths(pipe, spec, prompts, detector, cfg, progress)
    adapter, mae = fit(features, labels, cfg)
    return adapter, training_report(spec, prompts, labels, table, cfg, mae, time.perf_counter() - start)


def training_report(spec, prompts: list[str], labels: torch.Tensor, table: list[dict], cfg: AdapterTraining,
                    mae: float, seconds: float) -> dict:
    """What `adapter.json` records of a training run: the concept, the settings, the fit and every label."""
    return {"concept": spec.name, "targets": spec.targets, "prompts": len(prompts), "images": len(labels),
            "training": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            "fit_mae": round(mae, 4), "seconds": round(seconds, 1), "labels": table}


def shapeworld_prompts(spec, per_form: int = 10) -> list[str]:
    """Prompts naming the target explicitly, by synonym and implicitly, and prompts of its siblings (label 0)."""
    _, sets = concept_sets(spec.targets[0], seeds=per_form)
    prompts = []
    for name in ("explicit", "synonym", "implicit", "other"):
        seen = list(dict.fromkeys(item.prompt for item in sets[name]))
        prompts += seen[::max(1, len(seen) // per_form)][:per_form]  # spread over the set (siblings are grouped)
    return prompts
