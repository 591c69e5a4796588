"""TRCE stage 2 — contrastive steering of the early denoising trajectory (Chen et al., ICCV 2025).

On the stage-1 model (its K/V edit applied and frozen), all self-attention weights and the cross-attention queries
train so that, early in the trajectory of a malicious prompt, the prediction moves towards a strongly guided safe
prediction and away from a strongly guided malicious one, while the unconditional prediction stays the stage-1
model's:

    f_s = ε_ref(x, c_s) + g (ε_ref(x, c_s) − ε_ref(x, ∅)),  f_m likewise for c_m   (g = 15, ε_ref: the original)
    L = max(0, ‖ε(x, c_m) − f_s‖² − ‖ε(x, c_m) − f_m‖² + 0.01) + the same for ε(x, ∅)
        + 100 · ‖ε(x_u, ∅) − ε_1(x_u, ∅)‖²                                         (ε_1: the stage-1 model)

x from the original model's DDIM trajectories for "a photo of {malicious}" (guidance 3) stopped at a random step in
the first half (t ∈ [480, 1000) for 50 steps), x_u from its unconditional ones. Norms are means over elements.
Authors' settings: AdamW lr 1e-6, 3 epochs, batch 1; their code never zeroes the gradients (not reproduced here).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch.nn.functional as F

from ..edits import edit_state
from ..sampling import predict
from .finetune import FineTuning, Prompts, latent_sampler, run_training, swapped

PROMPT_TEMPLATE = "a photo of {}"


def pair_prompts(concept_pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    malicious = [PROMPT_TEMPLATE.format(m) for m, _ in concept_pairs]
    return malicious, [PROMPT_TEMPLATE.format(s) for _, s in concept_pairs]


def steer(pipe, concept_pairs: list[tuple[str, str]], config, stage1) -> tuple[dict, object]:
    """Train stage 2 on `pipe` with the applied stage-1 edit `stage1`; returns (deltas, training result)."""
    malicious, safe = pair_prompts(concept_pairs)
    bad, good, blank = Prompts.encode(pipe, malicious), Prompts.encode(pipe, safe), Prompts.encode(pipe, [""])
    originals = edit_state(pipe).originals
    kv = {n: p for n, p in pipe.unet.named_parameters() if f"unet.{n}" in stage1.param_names}
    with FineTuning.of(pipe, config) as tuning:
        @contextmanager
        def original():
            with tuning.frozen(), swapped(kv, {n: originals[f"unet.{n}"] for n in kv}):
                yield

        def guided(x, t, rows):
            conditional = predict(pipe, x, t, *rows)
            return conditional + config.guidance_target * (conditional - predict(pipe, x, t, bad.empty,
                                                                                  bad.empty_pooled))

        def hinge(prediction, toward, away):
            closer = (prediction - toward).pow(2).flatten(1).mean(1) - (prediction - away).pow(2).flatten(1).mean(1)
            return F.relu(closer + config.margin).mean()

        draw_bad = latent_sampler(pipe, tuning, bad, config, window=(0.0, config.early_fraction), model=original)
        draw_blank = latent_sampler(pipe, tuning, blank, config, model=original)

        def loss_fn(ctx):
            index, x, t = draw_bad(ctx.generator)
            _, x_u, t_u = draw_blank(ctx.generator)
            with original():
                toward, away = guided(x, t, good.rows(index)), guided(x, t, bad.rows(index))
            with tuning.frozen():
                keep = predict(pipe, x_u, t_u, blank.empty, blank.empty_pooled)
            steered = hinge(predict(pipe, x, t, *bad.rows(index)), toward, away) + \
                hinge(predict(pipe, x, t, bad.empty, bad.empty_pooled), toward, away)
            return steered + config.lam_uncond * F.mse_loss(
                predict(pipe, x_u, t_u, blank.empty, blank.empty_pooled).float(), keep.float())
        result = run_training(tuning, loss_fn, "trce", config, {"pairs": [list(p) for p in concept_pairs]})
        deltas = tuning.deltas()
    return deltas, result

