"""Adapter edits: small extra modules attached to UNet submodules through forward hooks, weights untouched.

An adapter type is registered by name with a factory `(config, target_module) -> torch.nn.Module`. Mode "input"
adapters transform what the target receives (ForceForget's Safe Adapter acts on the text embedding before
`attn2.to_k` / `to_v`); mode "output" adapters add to what it returns (a LoRA-style branch). The adapters'
weights are the edit's tensors, named `<target module>::<adapter parameter>`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch

from ..errors import EditError
from .base import Edit, register_edit_kind
from .state import edit_state

ADAPTERS: dict[str, Callable[[dict, torch.nn.Module], torch.nn.Module]] = {}
SEPARATOR = "::"


def register_adapter(name: str):
    def wrap(factory):
        ADAPTERS[name] = factory
        return factory
    return wrap


@register_edit_kind
class AdapterEdit(Edit):
    kind = "adapter"

    @classmethod
    def from_modules(cls, adapters: dict[str, torch.nn.Module], *, adapter: str, mode: str, fingerprint: dict,
                     **metadata) -> "AdapterEdit":
        """Package trained adapter modules, keyed by the UNet submodule each attaches to."""
        tensors = {f"{target}{SEPARATOR}{k}": v.detach().cpu() for target, module in adapters.items()
                   for k, v in module.state_dict().items()}
        config = {**metadata.pop("config", {}), "adapter": adapter, "mode": mode}
        return cls(tensors, config=config, fingerprint=fingerprint, **metadata)

    @property
    def targets(self) -> list[str]:
        return sorted({k.split(SEPARATOR)[0] for k in self.tensors})

    def _check_fits(self, pipe) -> None:
        super()._check_fits(pipe)
        config = self.metadata["config"]
        if config.get("adapter") not in ADAPTERS:
            raise EditError(f"{self}: adapter type {config.get('adapter')!r} is not available in this erasekit")
        if config.get("mode") not in ("input", "output"):
            raise EditError(f"{self}: adapter mode must be 'input' or 'output', not {config.get('mode')!r}")
        modules = dict(pipe.unet.named_modules())
        missing = [t for t in self.targets if t not in modules]
        if missing:
            raise EditError(f"{self} attaches to modules this UNet does not have: {missing[:3]}")

    def build(self, target: torch.nn.Module, name: str) -> torch.nn.Module:
        config = self.metadata["config"]
        adapter = ADAPTERS[config["adapter"]](config, target)
        state = {k.split(SEPARATOR, 1)[1]: v for k, v in self.tensors.items() if k.split(SEPARATOR)[0] == name}
        try:
            adapter.load_state_dict(state)
        except RuntimeError as e:
            raise EditError(f"{self}: adapter weights do not fit {name}: {e}") from None
        return adapter.to(next(target.parameters()).device, next(target.parameters()).dtype)

    def _apply(self, pipe) -> None:
        modules = dict(pipe.unet.named_modules())
        adapters = {name: self.build(modules[name], name) for name in self.targets}
        edit_state(pipe).live[id(self)] = attach(pipe.unet, adapters, self.metadata["config"]["mode"])

    def _remove(self, pipe) -> None:
        for handle in edit_state(pipe).live.pop(id(self)):
            handle.remove()


def attach(unet: torch.nn.Module, adapters: dict[str, torch.nn.Module], mode: str) -> list:
    """Hook live adapter modules onto the UNet submodules they are keyed by (the way an applied AdapterEdit runs,
    and the way a trainer runs adapters it is training). Returns the hook handles."""
    modules = dict(unet.named_modules())
    missing = [name for name in adapters if name not in modules]
    if missing:
        raise EditError(f"adapters target modules this UNet does not have: {missing[:3]}")
    handles = []
    for name, adapter in adapters.items():
        if mode == "input":
            handle = modules[name].register_forward_pre_hook(
                lambda m, args, a=adapter: None if getattr(a, "muted", False) else (a(args[0]), *args[1:]))
        elif mode == "output":
            handle = modules[name].register_forward_hook(
                lambda m, args, out, a=adapter: None if getattr(a, "muted", False) else out + a(args[0]))
        else:
            raise EditError(f"adapter mode must be 'input' or 'output', not {mode!r}")
        handles.append(handle)
    return handles


@contextmanager
def attached(unet: torch.nn.Module, adapters: dict[str, torch.nn.Module], mode: str):
    """The adapters hooked on for the duration (for training them); the UNet is untouched afterwards."""
    handles = attach(unet, adapters, mode)
    try:
        yield adapters
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def muted(adapters: dict[str, torch.nn.Module]):
    """Attached adapters pass their modules through unchanged for the duration: the original model's predictions
    without unhooking (a trainer's regulariser towards the original, e.g. ForceForget's `lam_keep`)."""
    for adapter in adapters.values():
        adapter.muted = True
    try:
        yield adapters
    finally:
        for adapter in adapters.values():
            adapter.muted = False
