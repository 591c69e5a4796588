"""Load any Stable-Diffusion-family pipeline (local folder or hub id); None means the embedded ShapeWorld model."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ModelError
from .layers import find_cross_attention

SHAPEWORLD_DIR = Path(__file__).resolve().parent.parent / "shapeworld" / "weights" / "pipeline"
DEFAULTS_FILE = "erasekit_defaults.json"  # optional sampler defaults shipped beside a pipeline (ShapeWorld has one)
_PIPELINE_CLASSES = {"sd1": "StableDiffusionPipeline", "sd2": "StableDiffusionPipeline",
                     "sdxl": "StableDiffusionXLPipeline"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None


def _model_index(model: str) -> tuple[dict, Path | None]:
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelError(f"{path} is not a diffusers pipeline folder (it has no model_index.json)")
        return _read_json(path / "model_index.json"), path
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelError(f"model {model!r} does not exist (neither a local folder nor a hub id like 'org/name')")
    from diffusers import DiffusionPipeline
    try:
        return DiffusionPipeline.load_config(model), None
    except Exception as e:  # offline, unknown id, gated repo: all user-side problems
        raise ModelError(f"cannot fetch {model!r} from the hub: {e}") from None


def detect_family(index: dict, folder: Path | None, model: str) -> str:
    """sd1 | sd2 | sdxl, from the configs: a second text encoder means SDXL; a tokenizer that pads with
    something other than its end token, or a UNet with linear projections, means SD2."""
    if "unet" not in index:
        raise ModelError(f"{model} has no UNet: erasekit works with UNet text-to-image pipelines")
    if "text_encoder_2" in index:
        return "sdxl"
    if folder is None:
        from diffusers import UNet2DConditionModel
        unet_config = UNet2DConditionModel.load_config(model, subfolder="unet")
    else:
        unet_config = _read_json(folder / "unet" / "config.json")
    tokenizer_config = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if folder is not None and (folder / "tokenizer" / name).exists():
            tokenizer_config = {**_read_json(folder / "tokenizer" / name), **tokenizer_config}
    pad = tokenizer_config.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if unet_config.get("use_linear_projection") or (pad is not None and pad != "<|endoftext|>"):
        return "sd2"
    return "sd1"


def load_pipeline(model: str | Path | None = None, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """Load a text-to-image pipeline. `None` gives the embedded ShapeWorld model.

    Weights are read from safetensors only. The pipeline's `erasekit_family` attribute says sd1, sd2 or sdxl."""
    import diffusers
    if model is None:
        if not (SHAPEWORLD_DIR / "model_index.json").exists():
            raise ModelError(f"the embedded ShapeWorld model is missing from {SHAPEWORLD_DIR}")
        model = SHAPEWORLD_DIR
    model = str(model)
    index, folder = _model_index(model)
    family = detect_family(index, folder, model)
    cls = getattr(diffusers, _PIPELINE_CLASSES[family])
    extra = {} if family == "sdxl" else {"safety_checker": None, "feature_extractor": None,
                                         "requires_safety_checker": False}
    try:
        pipe = cls.from_pretrained(model, dtype=dtype, use_safetensors=True, **extra)
    except (OSError, ValueError, EnvironmentError) as e:
        raise ModelError(f"cannot load {model}: {e}") from None
    if not find_cross_attention(pipe.unet):
        raise ModelError(f"{model}: its UNet has no cross-attention layers, so there is nothing to erase")
    pipe.erasekit_family = family
    pipe.erasekit_source = model
    pipe.erasekit_shapeworld = folder is not None and folder.resolve() == SHAPEWORLD_DIR
    card = folder / DEFAULTS_FILE if folder is not None else None
    pipe.erasekit_defaults = _read_json(card) if card is not None and card.exists() else {}
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
