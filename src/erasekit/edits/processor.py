"""Attention-processor edits: inference-time methods installed as diffusers attention processors.

A method registers a processor factory by name; the edit stores that name, its config and any tensors, and on
`apply` installs one processor per selected attention module, remembering the ones it replaced."""
from __future__ import annotations

from typing import Callable

from ..errors import EditError
from .base import Edit, applied_edits, register_edit_kind

# name → factory(edit, pipe, module_name, module) → processor
PROCESSORS: dict[str, Callable] = {}


def register_processor(name: str):
    def wrap(factory: Callable) -> Callable:
        PROCESSORS[name] = factory
        return factory
    return wrap


def _select(pipe, layers: str) -> dict[str, object]:
    modules = {n: m for n, m in pipe.unet.named_modules() if hasattr(m, "set_processor")}
    if layers == "cross":
        modules = {n: m for n, m in modules.items() if getattr(m, "is_cross_attention", False)}
    elif layers == "self":
        modules = {n: m for n, m in modules.items() if not getattr(m, "is_cross_attention", False)}
    return modules


@register_edit_kind
class ProcessorEdit(Edit):
    kind = "attention_processor"

    @property
    def processor_name(self) -> str:
        return self.metadata["config"]["processor"]

    def _targets(self, pipe) -> dict[str, object]:
        targets = _select(pipe, self.metadata["config"].get("layers", "cross"))
        if not targets:
            raise EditError(f"{self}: this UNet has no {self.metadata['config'].get('layers', 'cross')} "
                            "attention layers to install processors on")
        return targets

    def _check_fits(self, pipe) -> None:
        super()._check_fits(pipe)
        if self.processor_name not in PROCESSORS:
            raise EditError(f"{self}: processor {self.processor_name!r} is not available in this erasekit")
        targets = self._targets(pipe)
        for other in applied_edits(pipe):
            if isinstance(other, ProcessorEdit) and set(other._targets(pipe)) & set(targets):
                raise EditError(f"{self} would replace the processors of {other} on the same layers; "
                                "remove that edit first")

    def _apply(self, pipe) -> None:
        factory = PROCESSORS[self.processor_name]
        saved = {}
        for name, module in self._targets(pipe).items():
            saved[name] = module.processor
            module.set_processor(factory(self, pipe, name, module))
        pipe.__dict__.setdefault("erasekit_saved_processors", {})[id(self)] = saved

    def _remove(self, pipe) -> None:
        modules = dict(pipe.unet.named_modules())
        for name, processor in pipe.erasekit_saved_processors.pop(id(self)).items():
            modules[name].set_processor(processor)
