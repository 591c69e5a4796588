"""Tiny random-weight Stable Diffusion pipelines for tests.

Each builder writes a complete diffusers pipeline folder (safetensors weights) that loads through the normal
`DiffusionPipeline.from_pretrained(folder)` path, with the same component layout and conditioning plumbing as
the real model family, but with under 5 MB of weights (fp32):

- ``sd1``: SD1.x layout. CLIP tokenizer padding with the end token, text width 32, epsilon prediction.
- ``sd2``: SD2.x layout. Tokenizer padding with ``!`` (id 0), text width 48, linear-projection transformers,
  v-prediction.
- ``sdxl``: SDXL layout. Two tokenizers and text encoders (width 32 + 32 = 64 cross-attention width),
  ``text_time`` added conditioning from the pooled projection (32) and six micro-conditioning ids.

Builds are deterministic: every model is created right after ``torch.manual_seed``, so two builds of the same
family give bit-identical weights. No hub access is needed; tokenizers are written locally.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from erasekit.shapeworld.tokenizer import save_tokenizer

__all__ = ["FAMILIES", "WORDS", "MAX_LENGTH", "build", "build_sd1", "build_sd2", "build_sdxl", "sd14_unet_config"]

#: Words that are single tokens in the tiny tokenizers; other text falls back to byte pieces.
WORDS = [
    "a", "an", "the", "photo", "of", "picture", "painting", "drawing", "style", "in", "by", "and", "with",
    "cat", "dog", "car", "tree", "house", "person", "woman", "man", "nude", "naked", "red", "blue", "green",
    "van", "gogh", "monet", "church",
]
MAX_LENGTH = 16
SEED = 0

# Scheduler settings of the released checkpoints.
_SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _tokenizer(pad_with_zero: bool) -> CLIPTokenizer:
    """CLIP BPE tokenizer over WORDS; pads with `<|endoftext|>` (SD1) or with `!`, id 0 (SD2, SDXL's second)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = save_tokenizer(tmp, words=WORDS, max_length=MAX_LENGTH)
        if pad_with_zero:
            tokenizer.pad_token = "!"
            assert tokenizer.pad_token_id == 0
            tokenizer.save_pretrained(tmp)
        # Reload so the returned object is exactly what a saved folder gives back.
        return CLIPTokenizer.from_pretrained(tmp)


def _text_config(tokenizer: CLIPTokenizer, hidden_size: int, hidden_act: str,
                 projection_dim: int = 32) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length,
        hidden_act=hidden_act, layer_norm_eps=1e-5, projection_dim=projection_dim,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _vae(scaling_factor: float = 0.18215, sample_size: int = 32):
    torch.manual_seed(SEED)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        sample_size=sample_size, scaling_factor=scaling_factor,
    )


def _unet(**kwargs: Any):
    config: dict[str, Any] = dict(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn", attention_head_dim=(2, 4), norm_num_groups=8,
        cross_attention_dim=32,
    )
    config.update(kwargs)
    torch.manual_seed(SEED)
    return UNet2DConditionModel(**config)


def _save(pipe, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_sd1(path: str | Path) -> Path:
    """Write a tiny SD1-style `StableDiffusionPipeline` folder at `path` (text width 32, epsilon) and return it."""
    tokenizer = _tokenizer(pad_with_zero=False)
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(_text_config(tokenizer, 32, "quick_gelu")).eval()
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=_unet(cross_attention_dim=32),
        scheduler=DDIMScheduler(**_SD_SCHEDULE, prediction_type="epsilon"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return _save(pipe, path)


def build_sd2(path: str | Path) -> Path:
    """Write a tiny SD2-style `StableDiffusionPipeline` folder at `path` (pad id 0, width 48, v-prediction)."""
    tokenizer = _tokenizer(pad_with_zero=True)
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(_text_config(tokenizer, 48, "gelu")).eval()
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=tokenizer,
        unet=_unet(cross_attention_dim=48, use_linear_projection=True),
        scheduler=DDIMScheduler(**_SD_SCHEDULE, prediction_type="v_prediction"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    return _save(pipe, path)


def build_sdxl(path: str | Path) -> Path:
    """Write a tiny `StableDiffusionXLPipeline` folder at `path` (two encoders of width 32, cross-attention 64)."""
    tokenizer = _tokenizer(pad_with_zero=False)
    tokenizer_2 = _tokenizer(pad_with_zero=True)
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(_text_config(tokenizer, 32, "quick_gelu")).eval()
    torch.manual_seed(SEED + 1)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, 32, "gelu", projection_dim=32)).eval()
    time_dim = 8
    unet = _unet(
        # Real SDXL has no attention in its first level; here the attention stays at the 32-channel level as in
        # SD1 (keeps the folder under 5 MB), and the 64-channel mid block gets SDXL's deeper 2-layer transformer.
        transformer_layers_per_block=(1, 2), use_linear_projection=True,
        cross_attention_dim=text_encoder.config.hidden_size + text_encoder_2.config.hidden_size,
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + text_encoder_2.config.projection_dim,
    )
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading", prediction_type="epsilon", interpolation_type="linear",
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(scaling_factor=0.13025), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    return _save(pipe, path)


def sd14_unet_config() -> dict[str, Any]:
    """The `UNet2DConditionModel` config of Stable Diffusion v1.4 (CompVis/stable-diffusion-v1-4, `unet/`)."""
    return {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    }


FAMILIES: dict[str, Callable[[str | Path], Path]] = {"sd1": build_sd1, "sd2": build_sd2, "sdxl": build_sdxl}


def build(family: str, path: str | Path) -> Path:
    """Write the tiny pipeline of `family` ("sd1", "sd2" or "sdxl") at `path` and return the folder."""
    try:
        builder = FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(FAMILIES)}") from None
    return builder(path)
