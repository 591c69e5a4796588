"""The fine-tuning step of a round, for edits that were trained (ESD, All-but-One) — or any weight delta with
`step="tune"`. Where a closed-form round solves the K/V rows of the adversarial inputs, this one trains the current
model (the base edit plus the hardening so far) a few steps on them, ESD's negative guidance with the same prompt
without the adversarial tokens in the empty prompt's place:

    ε'(x, c_adv) ≈ ε(x, c_ref) − η (ε(x, c_adv) − ε(x, c_ref))

while its unconditional prediction (λ_u) and its predictions for the preserved concepts, the neutral captions and
the target's own prompts (erased already: kept so; λ_p) stay the current model's. x_t from the current model's
trajectories for the adversarial inputs, each sample's loss over its guidance energy (`finetune`'s options).
"""
from __future__ import annotations

import torch

from ..attacks.whitebox import encode_ids
from ..errors import NotSupportedError
from ..methods.finetune import (FineTuning, Preservation, Prompts, latent_sampler, preserve_prompts, run_training,
                                sample_weights, training_prompts, weighted_mse)
from ..sampling import predict, unconditional
from .config import TuningStep
from .probe import Adversarial
from .rows import free_runs_replaced


def adversarial_prompts(pipe, found: list[Adversarial]) -> tuple[Prompts, Prompts]:
    """The adversarial inputs' encoder outputs, and those of the same prompts without their adversarial tokens."""
    if getattr(pipe, "text_encoder_2", None) is not None:
        raise NotSupportedError("hardening by fine-tuning takes single-encoder models (SD1, SD2, ShapeWorld)")
    pad = pipe.tokenizer.pad_token_id
    ids = torch.tensor([free_runs_replaced(f.ids, f.free, [], pad) for f in found])
    empty, _ = unconditional(pipe)
    texts = [pipe.tokenizer.decode(f.ids, skip_special_tokens=True) for f in found]
    adversarial = torch.stack([f.embeddings for f in found]).to(empty)
    return (Prompts(texts, adversarial, None, empty, None),
            Prompts(texts, encode_ids(pipe, ids).to(empty), None, empty, None))


def tuned_round(pipe, current, found: list[Adversarial], spec, eta: float, options: dict) -> dict:
    """The deltas (canonical names) that a round's training adds to the current edit's weights."""
    config = TuningStep(**options)
    adversarial, reference = adversarial_prompts(pipe, found)
    held = Prompts.encode(pipe, preserve_prompts(pipe, spec) + training_prompts(spec))
    current.apply(pipe)
    try:
        with FineTuning.of(pipe, config) as tuning:  # its frozen model is the current one
            loss_fn = round_loss(pipe, tuning, adversarial, reference, held, eta, config)
            run_training(tuning, loss_fn, "harden", config, {"inputs": adversarial.texts, "eta": eta})
            return tuning.deltas()
    finally:
        current.remove(pipe)


def round_loss(pipe, tuning, adversarial: Prompts, reference: Prompts, held: Prompts, eta: float,
               config: TuningStep):
    draw = latent_sampler(pipe, tuning, adversarial, config)
    held_term = Preservation(pipe, tuning, held, config)

    def loss_fn(ctx):
        index, x, t = draw(ctx.generator)
        with tuning.frozen():
            found = predict(pipe, x, t, *adversarial.rows(index))
            kept = predict(pipe, x, t, *reference.rows(index))
            empty = predict(pipe, x, t, adversarial.empty, None)
        weights = sample_weights(found, kept, config)
        loss = weighted_mse(predict(pipe, x, t, *adversarial.rows(index)), kept - eta * (found - kept), weights)
        own_empty = predict(pipe, x, t, adversarial.empty, None)
        loss = loss + config.lam_uncond * weighted_mse(own_empty, empty, weights)
        return loss + config.lam_preserve * held_term.loss(x, t, weights, ctx.generator)
    return loss_fn

