"""Trajectories: the same sampler as `generate`, with intermediate latents, early stops, log-probabilities and
gradients."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

import erasekit
from erasekit.sampling import ddim_step, decode, generate, trajectory
from erasekit.sampling.trajectory import ddim_scheduler

PROMPTS, SEEDS = ["a red cat", "a blue dog"], [3, 4]


def ddim(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # SDXL's tiny model ships Euler
    return pipe


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_deterministic_trajectory_ends_in_the_images_generate_makes(tiny_dirs, family):
    pipe = ddim(erasekit.load_pipeline(tiny_dirs[family]))
    images = generate(pipe, PROMPTS, SEEDS, steps=5, progress=False)
    mine = decode(pipe, trajectory(pipe, PROMPTS, SEEDS, steps=5).final)
    assert [a.tobytes() for a in images] == [b.tobytes() for b in mine]


def test_shapeworld_trajectory_matches_generate_and_keeps_what_is_asked():
    pipe = erasekit.load_pipeline()
    prompts = ["a red triangle", "a blue yield sign"]
    full = trajectory(pipe, prompts, SEEDS, keep="all")
    assert [a.tobytes() for a in decode(pipe, full.final)] == \
        [b.tobytes() for b in generate(pipe, prompts, SEEDS, progress=False)]
    assert sorted(full.latents) == list(range(21)) and torch.equal(full.latents[20], full.final)
    early = trajectory(pipe, prompts, SEEDS, stop_at=7, keep=[0, 7])
    assert torch.equal(early.final, full.latents[7]) and torch.equal(early.latents[0], full.latents[0])
    assert len(early.timesteps) == 7


def test_stochastic_steps_follow_diffusers_and_report_log_probabilities(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    scheduler = ddim_scheduler(pipe, 4)
    x, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for t in scheduler.timesteps:
        theirs = scheduler.step(eps, t, x, eta=1.0, generator=[torch.Generator().manual_seed(s) for s in SEEDS])
        ours, logp = ddim_step(scheduler, eps, t, x, 1.0, [torch.Generator().manual_seed(s) for s in SEEDS])
        assert torch.equal(ours, theirs.prev_sample) and logp.shape == (2,) and torch.isfinite(logp).all()
    run = trajectory(pipe, PROMPTS, SEEDS, steps=4, eta=1.0, log_probs=True)
    again = trajectory(pipe, PROMPTS, SEEDS, steps=4, eta=1.0, log_probs=True)
    assert run.log_probs.shape == (2, 4) and torch.equal(run.log_probs, again.log_probs)
    assert not torch.equal(run.final, trajectory(pipe, PROMPTS, SEEDS, steps=4).final)  # η = 1 draws noise
    with pytest.raises(ValueError, match="eta > 0"):
        trajectory(pipe, PROMPTS, SEEDS, steps=4, log_probs=True)


def test_gradients_flow_to_prompt_embeddings_only_when_asked(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    embeds = erasekit.encode(pipe, PROMPTS).embeddings.clone().requires_grad_(True)
    out = trajectory(pipe, None, SEEDS, steps=2, prompt_embeds=embeds, grad=True).final
    out.square().mean().backward()
    assert embeds.grad is not None and embeds.grad.abs().sum() > 0
    assert not trajectory(pipe, None, SEEDS, steps=2, prompt_embeds=embeds).final.requires_grad
