"""Trajectories: the same sampler as `generate`, with intermediate latents, early stops, log-probabilities and
gradients."""
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


@pytest.mark.parametrize("strength", [0.5, 0.75])
def test_image_to_image_matches_diffusers_and_runs_on_sdxl(tiny_dirs, strength):
    from diffusers import StableDiffusionImg2ImgPipeline
    from erasekit.sampling import image_to_image
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    sources = generate(pipe, PROMPTS, [7, 8], steps=3, progress=False)
    theirs = StableDiffusionImg2ImgPipeline(**pipe.components)
    theirs.set_progress_bar_config(disable=True)
    expected = theirs(PROMPTS, image=sources, strength=strength, num_inference_steps=6, guidance_scale=7.5,
                      generator=[torch.Generator().manual_seed(s) for s in SEEDS]).images
    ours = image_to_image(pipe, sources, PROMPTS, SEEDS, strength=strength, steps=6, guidance=7.5)
    assert [a.tobytes() for a in ours] == [b.tobytes() for b in expected]
    xl = erasekit.load_pipeline(tiny_dirs["sdxl"])
    out = image_to_image(xl, generate(xl, PROMPTS, [7, 8], steps=3, progress=False), PROMPTS, SEEDS,
                         strength=strength, steps=4)
    assert len(out) == 2 and out[0].size == sources[0].size
