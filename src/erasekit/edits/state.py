"""Where applied edits live: on the UNet they change, as diffusers keeps attention processors and hooks on the
model. Every pipeline built from the same components (`StableDiffusionImg2ImgPipeline(**pipe.components)`) shares
that UNet, so it sees the same applied edits."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

STATE_ATTRIBUTE = "_erasekit_edit_state"


@dataclass
class EditState:
    stack: list = field(default_factory=list)                        # applied edits, in the order applied
    originals: dict[str, torch.Tensor] = field(default_factory=dict)  # parameter → weight before any delta
    live: dict[int, object] = field(default_factory=dict)             # id(edit) → what its apply installed


def edit_state(pipe_or_unet) -> EditState:
    """The edit state of a pipeline's UNet (or of a UNet given directly), created on first use."""
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    state = unet.__dict__.get(STATE_ATTRIBUTE)
    if state is None:
        state = unet.__dict__[STATE_ATTRIBUTE] = EditState()  # a plain attribute: not a submodule or buffer
    return state


def applied_edits(pipe) -> list:
    """The edits applied to `pipe`'s UNet, in the order they were applied."""
    return edit_state(pipe).stack
