"""Parameters of a pipeline's trainable components, named `<component>.<parameter>` (unet, text_encoder,
text_encoder_2), as weight-delta edits and fingerprints name them. A name without a component is the UNet's (the
form erasekit 0.1 wrote)."""
from __future__ import annotations

import torch

from ..errors import EditError

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def canonical(name: str) -> str:
    """`component.parameter`; a bare parameter name is the UNet's."""
    return name if name.split(".", 1)[0] in COMPONENTS else f"unet.{name}"


def split(name: str) -> tuple[str, str]:
    component, parameter = canonical(name).split(".", 1)
    return component, parameter


def components(pipe) -> dict[str, torch.nn.Module]:
    """The pipeline's components that an edit may change."""
    return {c: getattr(pipe, c) for c in COMPONENTS if getattr(pipe, c, None) is not None}


def parameter(pipe, name: str) -> torch.nn.Parameter:
    component, parameter_name = split(name)
    module = getattr(pipe, component, None)
    try:
        return module.get_parameter(parameter_name)
    except AttributeError:
        raise EditError(f"this pipeline has no parameter {canonical(name)!r}") from None


def named_parameters(pipe) -> dict[str, torch.nn.Parameter]:
    """Every parameter an edit may change, by canonical name."""
    return {f"{c}.{n}": p for c, module in components(pipe).items() for n, p in module.named_parameters()}
