"""Configs of ShapeWorld's pipeline components: genuine diffusers / transformers classes, small sizes."""
from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .render import IMAGE_SIZE

LATENT_CHANNELS = 4
LATENT_SIZE = IMAGE_SIZE // 2  # the VAE downsamples once
TEXT_DIM = 128
# Sampling defaults of the embedded model (also written into its scheduler config and pipeline card).
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 7.5
SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=False)
# v-prediction: an ε-loss weights errors in the clean image by the SNR, so at the high noise levels where a 16x16
# latent's colour and background are decided it barely rewards following the prompt; v weights them by SNR + 1.
PREDICTIONS = ("v_prediction", "epsilon")
PREDICTION = PREDICTIONS[0]


def text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=tokenizer.model_max_length, projection_dim=TEXT_DIM,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_act="quick_gelu",
    )
    return CLIPTextModel(config)


def vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=IMAGE_SIZE,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=16,
    )


def unet() -> UNet2DConditionModel:
    # Cross-attention at 16x16 and 8x8 and in the mid block (4x4).
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=(32, 64, 96), layers_per_block=1, norm_num_groups=32,
        # diffusers' `attention_head_dim` is the number of heads here: 32 channels per head
        cross_attention_dim=TEXT_DIM, attention_head_dim=(1, 2, 3),
    )


def train_scheduler(prediction: str = PREDICTION) -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE, prediction_type=prediction)


def sample_scheduler(prediction: str = PREDICTION) -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULE, prediction_type=prediction, set_alpha_to_one=False, steps_offset=1)
