"""The embedded ShapeWorld pipeline: a plain diffusers folder, small, and usable for image-to-image."""
import numpy as np
import torch
from PIL import Image

import erasekit
from erasekit.models.loading import SHAPEWORLD_DIR
from erasekit.shapeworld.domain import Scene
from erasekit.shapeworld.render import render


def test_loads_with_plain_diffusers_and_has_sd1_layout():
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    pipe = StableDiffusionPipeline.from_pretrained(SHAPEWORLD_DIR)
    assert isinstance(pipe.unet, UNet2DConditionModel) and isinstance(pipe.vae, AutoencoderKL)
    assert isinstance(pipe.text_encoder, CLIPTextModel) and isinstance(pipe.tokenizer, CLIPTokenizer)
    tok = pipe.tokenizer
    assert tok.pad_token_id == tok.eos_token_id and tok.model_max_length <= 77
    names = [layer.name for layer in erasekit.find_cross_attention(pipe.unet)]
    resolutions = {n.split(".attentions")[0] for n in names}
    assert "mid_block" in resolutions and len(resolutions - {"mid_block"}) >= 4  # two down + two up levels


def test_weights_are_small_safetensors():
    files = [p for p in SHAPEWORLD_DIR.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20


def test_embedded_default_is_shapeworld():
    pipe = erasekit.load_pipeline()
    assert pipe.erasekit_family == "sd1"
    assert pipe.erasekit_defaults["steps"] > 0
    from erasekit.sampling import generate
    image = generate(pipe, "a red triangle", [0], steps=4, progress=False)[0]
    assert image.size == (32, 32)


def test_image_to_image_with_the_same_components():
    from diffusers import StableDiffusionImg2ImgPipeline
    pipe = erasekit.load_pipeline()
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    source = Image.fromarray(render(Scene("square", "blue", "solid", "white"), 0))
    src = np.asarray(source, dtype=float)

    def distance(strength):
        out = img2img("a green circle on a black background", image=source, strength=strength,
                      num_inference_steps=10, generator=torch.Generator().manual_seed(0)).images[0]
        assert out.size == source.size
        return np.abs(np.asarray(out, dtype=float) - src).mean()

    assert distance(0.2) < distance(1.0)
