"""The one training loop: every method that trains (ESD, All-but-One, TRCE stage 2, ForceForget's policy updates),
the attacks that optimise, and ShapeWorld's trainers hand it a loss function and their trainable tensors.

    result = train(loss_fn, {"lora.up": up, "lora.down": down}, TrainingConfig(steps=200, lr=1e-4), folder="run")

Per optimiser step: `torch.manual_seed` and a generator are derived from (seed, step, micro-batch), so a run is
reproducible from its seed and a resumed run continues bit-identically; the loss of each micro-batch is checked
(NaN or Inf stops the run with the last good checkpoint kept); gradients are accumulated, clipped, applied; the EMA
(diffusers' EMAModel) follows; a CSV log and an atomic checkpoint are written every few steps when a folder is
given.

Data-parallel under `torchrun --nproc_per_node N` (CPU) or `accelerate launch --num_processes N` (GPUs): process r
computes micro-batches r, r + N, … of each step (so N processes with `accumulation` a see the micro-batches one
process sees with accumulation N·a), the gradients are averaged across processes, every process applies the same
update, and only the main process writes checkpoints and logs."""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..utils.processes import process_state
from . import checkpoint as ckpt
from .config import TrainingConfig, TrainingError
from .randomness import derived_seed, generator

LOG_FIELDS = ("step", "loss", "lr", "seconds")


@dataclass
class StepContext:
    """What a loss function gets for one micro-batch."""
    step: int                     # 0-based optimiser step
    micro: int                    # micro-batch within the step
    generator: torch.Generator    # derived from (seed, step, micro): draw all of the step's noise from it
    seed: int                     # the same derivation as an int, for other generators (numpy, random)


@dataclass
class TrainingResult:
    losses: list[float] = field(default_factory=list)   # per step run in this call
    first_step: int = 0                                  # where this call started (> 0 after a resume)
    seconds: float = 0.0


def make_optimizer(parameters: list[torch.Tensor], config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(parameters, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def train(loss_fn: Callable[[StepContext], torch.Tensor], parameters: dict[str, torch.Tensor],
          config: TrainingConfig, *, folder: str | Path | None = None, record: dict | None = None,
          ema_decay: float | None = None, buffers: dict[str, torch.Tensor] | None = None, desc: str = "train",
          progress: bool = True, status: Callable[[], dict] | None = None) -> TrainingResult:
    """Optimise `parameters` (name → leaf tensor with requires_grad) to minimise `loss_fn` for `config.steps`
    steps. With `folder`, checkpoints go to `folder/checkpoint` and the log to `folder/log.csv`, and a run found
    there resumes (refused when its settings, `config` plus `record`, differ). With `ema_decay`, the parameters
    end as their EMA (diffusers' EMAModel). `buffers`: tensors the forward pass changes that are not optimised
    (BatchNorm's running statistics), checkpointed and restored with the parameters. `status`: more figures for
    the progress bar (e.g. a mean reward). Returns the losses of the steps run here."""
    config.check()
    if not parameters:
        raise TrainingError("nothing to train: the selection of trainable parameters is empty")
    buffers = buffers or {}
    if set(buffers) & set(parameters):
        raise TrainingError(f"names used both as parameters and buffers: {sorted(set(buffers) & set(parameters))}")
    names, tensors = list(parameters), list(parameters.values())
    optimizer = make_optimizer(tensors, config)
    ema = _ema(tensors, ema_decay)
    settings = {"training": config.record(), "parameters": {n: list(t.shape) for n, t in parameters.items()},
                "ema_decay": ema_decay, **(record or {})}
    if buffers:
        settings["buffers"] = {n: list(t.shape) for n, t in buffers.items()}
    _start_processes()
    folder = Path(folder) if folder is not None else None
    start = _resume(folder, settings, {**parameters, **buffers}, optimizer, ema)
    log = _Log(folder / "log.csv", start) if folder is not None and _is_main() else None
    result, began = TrainingResult(first_step=start), time.perf_counter()
    bar = tqdm(range(start, config.steps), desc=desc, initial=start, total=config.steps,
               disable=not progress or not _is_main())
    for step in bar:
        loss = _step(loss_fn, tensors, optimizer, config, step)
        if ema is not None:
            ema.step(tensors)
        result.losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4g}", **(status() if status is not None else {}))
        done = step + 1
        if log is not None and (done % config.log_every == 0 or done == config.steps):
            log.write(done, loss, config.lr_at(step), round(time.perf_counter() - began, 2))
        if folder is not None and (done == config.steps or (config.checkpoint_every and
                                                            done % config.checkpoint_every == 0)):
            if _is_main():
                _save(folder, done, names, tensors, buffers, optimizer, ema, settings)
            _barrier()
    bar.close()
    if ema is not None:
        ema.copy_to(tensors)
    result.seconds = time.perf_counter() - began
    return result


def _step(loss_fn, tensors, optimizer, config: TrainingConfig, step: int) -> float:
    for group in optimizer.param_groups:
        group["lr"] = config.lr_at(step)
    optimizer.zero_grad(set_to_none=True)
    processes, rank = world()
    total = 0.0
    for k in range(config.accumulation):
        micro = k * processes + rank
        seed = derived_seed(config.seed, step, micro)
        torch.manual_seed(seed)  # anything drawing from the global generator (dropout) is seeded too
        loss = loss_fn(StepContext(step, micro, generator(config.seed, step, micro), seed))
        value = _mean_over_processes(float(loss.detach()), processes)
        if not math.isfinite(value):
            raise TrainingError(f"the loss became {value} at step {step + 1}; training stopped, the last good "
                                "checkpoint (if any) is kept")
        (loss / config.accumulation).backward()
        total += value / config.accumulation
    if processes > 1:
        _average_gradients(tensors, processes)
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(tensors, config.grad_clip)
    optimizer.step()
    return total


def world() -> tuple[int, int]:
    """(number of processes, this one's index): (1, 0) unless launched data-parallel."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _is_main() -> bool:
    return world()[1] == 0


def _mean_over_processes(value: float, world: int) -> float:
    if world == 1:
        return value
    import torch.distributed as dist
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor) / world


def _average_gradients(tensors, world: int) -> None:
    import torch.distributed as dist
    for t in tensors:
        if t.grad is None:
            t.grad = torch.zeros_like(t)
        dist.all_reduce(t.grad)
        t.grad /= world


def _start_processes() -> None:
    """Join the process group when launched as one of several processes (a no-op in a single process)."""
    import os
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        process_state()


def _barrier() -> None:
    if world()[0] > 1:
        import torch.distributed as dist
        dist.barrier()


def _ema(tensors, decay: float | None):
    if decay is None:
        return None
    from diffusers.training_utils import EMAModel
    return EMAModel(tensors, decay=decay)


def _save(folder: Path, step: int, names, tensors, buffers, optimizer, ema, settings) -> None:
    weights = {**{name: t.detach() for name, t in zip(names, tensors)}, **buffers}
    shadow = None if ema is None else {name: s for name, s in zip(names, ema.shadow_params)}
    counters = {} if ema is None else {"ema_step": ema.optimization_step}
    ckpt.save(folder / "checkpoint", ckpt.Checkpoint(step, weights, optimizer.state_dict(), shadow, settings,
                                                     counters))


def _resume(folder, settings, saved: dict[str, torch.Tensor], optimizer, ema) -> int:
    """Restore `saved` (the parameters, then any buffers), the optimiser and the EMA from the checkpoint in
    `folder`; the step it was written at (0: none)."""
    if folder is None:
        return 0
    found = ckpt.load(folder / "checkpoint", settings)
    if found is None:
        return 0
    with torch.no_grad():
        for name, tensor in saved.items():
            tensor.copy_(found.weights[name])
    optimizer.load_state_dict(found.optimizer)
    if ema is not None:
        if found.ema is None or "ema_step" not in found.counters:
            raise TrainingError(f"{folder} holds a checkpoint without EMA weights")
        for shadow, name in zip(ema.shadow_params, saved):  # the parameters come first
            shadow.copy_(found.ema[name])
        ema.optimization_step = found.counters["ema_step"]
    return found.step


class _Log:
    """log.csv: step, loss, lr, seconds. On resume, rows after the checkpoint's step are dropped (they are run
    again)."""

    def __init__(self, path: Path, start: int):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if path.exists() and start > 0:
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, step: int, loss: float, lr: float, seconds: float) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow({"step": step, "loss": f"{loss:.6g}", "lr": f"{lr:.3g}",
                                                    "seconds": seconds})
