"""Sampling-time edits: methods that act while sampling, through diffusers attention processors and/or UNet hooks
(GIE sets processors; SLD only hooks the UNet call).

A method registers a `SamplingSession` subclass by name (`register_session`); the edit stores that name, its config
and any tensors (e.g. a small adapter). `apply` starts a session on the pipeline's UNet: it installs the session's
processor on each selected attention module and its UNet hooks, remembering what it replaced; `remove` restores all
of it. The session is kept in the UNet's edit state, so every pipeline built from the same components sees it. A
method that needs more rows in the batch (SLD's safety concept, GIE's branch 0) adds them in its UNet pre-hook and
drops them in its post-hook, so every plain pipeline call runs it.

The registry is filled when the methods are imported, which `import erasekit` does; this layer never imports them."""
from __future__ import annotations

import torch

from ..errors import EditError
from .base import Edit, register_edit_kind
from .state import edit_state

# name → SamplingSession subclass
SESSIONS: dict[str, type["SamplingSession"]] = {}


def register_session(name: str):
    def wrap(cls: type["SamplingSession"]) -> type["SamplingSession"]:
        SESSIONS[name] = cls
        return cls
    return wrap


def select_attention(unet, layers: str) -> dict[str, object]:
    """Attention modules by name: "all", "cross", "self" or "none"."""
    if layers == "none":
        return {}
    modules = {n: m for n, m in unet.named_modules() if hasattr(m, "set_processor")}
    if layers == "cross":
        modules = {n: m for n, m in modules.items() if getattr(m, "is_cross_attention", False)}
    elif layers == "self":
        modules = {n: m for n, m in modules.items() if not getattr(m, "is_cross_attention", False)}
    return modules


class SamplingSession:
    """The live state of an applied sampling-time edit on one pipeline. Subclasses set `layers` and override
    `processor` (one per attention module) and/or `on_unet_call` / `on_unet_output`."""
    layers = "cross"

    def __init__(self, edit: "SamplingTimeEdit", pipe):
        self.edit, self.pipe, self.config = edit, pipe, edit.metadata["config"]
        self._saved: dict[str, object] = {}
        self._handles = []

    def processor(self, name: str, module):
        raise NotImplementedError

    def check(self) -> None:
        """Raise EditError when the method cannot run on this pipeline (before anything is installed)."""

    def targets(self) -> dict[str, object]:
        return select_attention(self.pipe.unet, self.config.get("layers", self.layers))

    def attach(self) -> None:
        for name, module in self.targets().items():
            self._saved[name] = module.processor
            module.set_processor(self.processor(name, module))
        unet = self.pipe.unet
        if type(self).on_unet_call is not SamplingSession.on_unet_call:
            self._handles.append(unet.register_forward_pre_hook(self._pre_hook, with_kwargs=True))
        if type(self).on_unet_output is not SamplingSession.on_unet_output:
            self._handles.append(unet.register_forward_hook(self._post_hook, with_kwargs=True))

    def detach(self) -> None:
        modules = dict(self.pipe.unet.named_modules())
        for name, processor in self._saved.items():
            modules[name].set_processor(processor)
        for handle in self._handles:
            handle.remove()
        self._saved, self._handles = {}, []

    # UNet hooks: (args, kwargs) of `unet(sample, timestep, encoder_hidden_states, ...)`.
    def on_unet_call(self, args: tuple, kwargs: dict):
        """Return None to leave the call unchanged, or new (args, kwargs)."""

    def on_unet_output(self, args: tuple, kwargs: dict, sample):
        """Return None to leave the noise prediction unchanged, or a replacement tensor."""

    def _pre_hook(self, module, args, kwargs):
        return self.on_unet_call(args, kwargs)

    def _post_hook(self, module, args, kwargs, output):
        sample = output[0] if isinstance(output, tuple) else output.sample
        new = self.on_unet_output(args, kwargs, sample)
        if new is None:
            return None
        if isinstance(output, tuple):
            return (new, *output[1:])
        output.sample = new
        return output

    # Shared helpers.
    def advance(self, args: tuple, kwargs: dict) -> bool:
        """Track the sampling step of this UNet call (`self.step` of `self.total_steps`); True when the call
        begins a new sampling run (the step did not move forward)."""
        step, self.total_steps = self.step_of(timestep_argument(args, kwargs))
        last = getattr(self, "_last_step", None)
        self.step, self._last_step = step, step
        return last is None or step <= last

    def step_of(self, timestep) -> tuple[int, int]:
        """(index of `timestep` among the scheduler's timesteps of the running call, number of them)."""
        timesteps = self.pipe.scheduler.timesteps
        t = float(timestep.flatten()[0]) if hasattr(timestep, "flatten") else float(timestep)
        hits = (timesteps.float() == t).nonzero()
        return (int(hits[0]) if len(hits) else 0), max(len(timesteps), 1)

    @staticmethod
    def guided_rows(sample) -> slice:
        """Rows that carry the prompt. Diffusers pipelines batch [uncond, cond] for classifier-free guidance with
        the latents duplicated, so equal halves mean guidance (read from the batch, since the UNet may be shared
        by several pipelines, e.g. an image-to-image one built from the same components)."""
        n = sample.shape[0] // 2
        guided = sample.shape[0] % 2 == 0 and n > 0 and torch.equal(sample[:n], sample[n:])
        return slice(n, 2 * n) if guided else slice(0, sample.shape[0])


def timestep_argument(args: tuple, kwargs: dict):
    return args[1] if len(args) > 1 else kwargs["timestep"]


@register_edit_kind
class SamplingTimeEdit(Edit):
    """Kind `sampling_time`: a method that acts while sampling (processors and/or UNet hooks), with its config;
    `config["session"]` names its registered session."""
    kind = "sampling_time"

    @property
    def session_name(self) -> str:
        config = self.metadata["config"]
        return config.get("session", config.get("processor"))  # "processor": files written by erasekit < 0.2

    def _check_fits(self, pipe) -> None:
        super()._check_fits(pipe)
        if self.session_name not in SESSIONS:
            raise EditError(f"{self}: sampling-time session {self.session_name!r} is not available in this "
                            f"erasekit (available: {', '.join(sorted(SESSIONS)) or 'none'})")
        for other in edit_state(pipe).stack:
            if isinstance(other, SamplingTimeEdit):
                raise EditError(f"{self} cannot run together with {other} (both act at sampling time); "
                                "remove that edit first")

    def _apply(self, pipe) -> None:
        session = SESSIONS[self.session_name](self, pipe)
        layers = session.config.get("layers", session.layers)
        if layers != "none" and not session.targets():
            raise EditError(f"{self}: this UNet has no attention layers of the kind it needs ({layers})")
        session.check()
        session.attach()
        edit_state(pipe).live[id(self)] = session

    def _remove(self, pipe) -> None:
        edit_state(pipe).live.pop(id(self)).detach()


def active_session(pipe) -> SamplingSession | None:
    """The session of the sampling-time edit applied to `pipe`'s UNet, if any (at most one can be)."""
    state = edit_state(pipe)
    return next((state.live[id(e)] for e in state.stack if isinstance(e, SamplingTimeEdit)), None)
