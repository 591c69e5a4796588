import numpy as np
import pytest
import torch

import erasekit
from erasekit.sampling import generate
from erasekit.methods.sld import PRESETS, SLDConfig


@pytest.fixture(scope="module")
def sd1(tiny_dirs):
    return erasekit.load_pipeline(tiny_dirs["sd1"])


def test_matches_diffusers_safe_pipeline(sd1):
    """Same formula, same batch layout [uncond, prompt, safety concept]: diffusers' own SLD is the reference."""
    from diffusers.pipelines.deprecated.stable_diffusion_safe import StableDiffusionPipelineSafe
    safe = StableDiffusionPipelineSafe(vae=sd1.vae, text_encoder=sd1.text_encoder, tokenizer=sd1.tokenizer,
                                       unet=sd1.unet, scheduler=sd1.scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    safe.safety_concept = "nude dog"
    safe.set_progress_bar_config(disable=True)
    strong = {f"sld_{k}": v for k, v in PRESETS["strong"].items()}
    strong["sld_warmup_steps"] = 2  # of 10 steps: a warm-up of 10 at the presets' 50 steps
    reference = safe("a photo of a cat", num_inference_steps=10, guidance_scale=7.5, output_type="np",
                     generator=torch.Generator().manual_seed(3), **strong).images[0]
    edit = erasekit.erase(sd1, "sld", ["nude dog"], strength="strong", warmup_steps=10)
    edit.apply(sd1)
    ours = generate(sd1, "a photo of a cat", [3], steps=10, guidance=7.5, progress=False, output_type="np")[0]
    edit.remove(sd1)
    plain = generate(sd1, "a photo of a cat", [3], steps=10, guidance=7.5, progress=False, output_type="np")[0]
    assert np.abs(ours - reference).max() < 1e-4
    assert np.abs(plain - reference).max() > 1e-2  # the safety guidance did act


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_acts_in_other_families_and_is_removed_cleanly(tiny_dirs, family):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    plain = generate(pipe, "a red dog", [1], steps=4, progress=False)[0]
    edit = erasekit.erase(pipe, "sld", ["dog"], strength="max")
    edit.apply(pipe)
    guided = generate(pipe, "a red dog", [1], steps=4, progress=False)[0]
    edit.remove(pipe)
    assert np.abs(np.asarray(guided, float) - np.asarray(plain, float)).mean() > 0.5
    assert generate(pipe, "a red dog", [1], steps=4, progress=False)[0].tobytes() == plain.tobytes()


def test_presets_and_overrides(sd1):
    assert SLDConfig(strength="max").resolved()["guidance_scale"] == 5000.0
    assert SLDConfig(strength="weak", threshold=0.5).resolved()["threshold"] == 0.5
    with pytest.raises(erasekit.ErasekitError, match="presets: weak, medium, strong, max"):
        erasekit.erase(sd1, "sld", ["dog"], strength="extreme")
    nudity = erasekit.erase(sd1, "sld", preset="nudity")
    assert "nudity" in nudity.metadata["config"]["concept"] and "violence" in nudity.metadata["config"]["concept"]


def test_two_sampling_time_edits_are_refused_together(sd1):
    first = erasekit.erase(sd1, "sld", ["dog"])
    first.apply(sd1)
    try:
        with pytest.raises(erasekit.EditError, match="cannot run together"):
            erasekit.erase(sd1, "gie", ["dog"]).apply(sd1)
    finally:
        first.remove(sd1)
