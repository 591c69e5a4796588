"""CLIP score as a detector-layer function: image–text agreement of a CLIP model from a folder or hub id the user
gives, 100 · max(cos(image, text), 0) per image (torchmetrics' definition)."""
from __future__ import annotations

import torch

from ..utils.images import to_uint8
from .base import DetectorUnavailable


def clip_features(output) -> torch.Tensor:
    """Unit-norm projected features: transformers 5 returns them as an output's pooler_output, 4.x as a tensor."""
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(features, dim=-1)


class CLIPScorer:
    """(images, texts) → (N,) CLIP scores, one text per image, with a CLIP model loaded from a folder or hub id.
    Raises DetectorUnavailable when the model cannot be loaded."""

    def __init__(self, model: str):
        from transformers import CLIPModel, CLIPProcessor
        try:
            self.model = CLIPModel.from_pretrained(model, use_safetensors=True).eval()
            self.processor = CLIPProcessor.from_pretrained(model)
        except (OSError, ValueError) as e:
            raise DetectorUnavailable(f"cannot load CLIP model {model!r}: {e}") from None

    @torch.no_grad()
    def __call__(self, images, texts: list[str]) -> torch.Tensor:
        inputs = self.processor(text=texts, images=list(to_uint8(images)), return_tensors="pt",
                                padding="max_length", truncation=True)
        image = clip_features(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
        text = clip_features(self.model.get_text_features(input_ids=inputs["input_ids"]))
        return (100 * (image * text).sum(-1)).clamp(min=0)
