"""Training checkpoints: one folder written atomically as a set (trainable weights and buffers, optimiser state,
EMA weights, step, the run's settings), safetensors and JSON only — nothing is unpickled on resume."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..utils.files import atomic_dir
from .config import TrainingError

WEIGHTS, OPTIMIZER, EMA, STATE = "weights.safetensors", "optimizer.safetensors", "ema.safetensors", "state.json"


@dataclass
class Checkpoint:
    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict
    ema: dict[str, torch.Tensor] | None
    record: dict                                       # the run's settings: a resume must match them
    counters: dict = field(default_factory=dict)       # small numbers that travel along (the EMA's step)


def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """A torch optimiser state_dict as flat tensors `<param index>.<key>` plus its JSON-ready param groups."""
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in group.items()} for group in state["param_groups"]]
    return tensors, groups


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    groups = [{k: tuple(v) if k == "betas" else v for k, v in group.items()} for group in groups]
    return {"state": state, "param_groups": groups}


def save(folder: str | Path, checkpoint: Checkpoint) -> None:
    optimizer_tensors, groups = optimizer_to_tensors(checkpoint.optimizer)
    with atomic_dir(folder) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in checkpoint.weights.items()}, tmp / WEIGHTS)
        save_file({k: v.detach().cpu().contiguous() for k, v in optimizer_tensors.items()}, tmp / OPTIMIZER)
        if checkpoint.ema is not None:
            save_file({k: v.detach().cpu().contiguous() for k, v in checkpoint.ema.items()}, tmp / EMA)
        (tmp / STATE).write_text(json.dumps({"step": checkpoint.step, "param_groups": groups,
                                             "counters": checkpoint.counters, "record": checkpoint.record},
                                            indent=2))


def load(folder: str | Path, record: dict | None) -> Checkpoint | None:
    """The checkpoint in `folder`, or None when there is none. Refuses one written by a run with other settings
    than `record` (None: read it whatever its settings, e.g. to export a run in progress)."""
    folder = Path(folder)
    if not (folder / STATE).is_file():
        return None
    try:
        state = json.loads((folder / STATE).read_text())
        weights, optimizer = load_file(folder / WEIGHTS), load_file(folder / OPTIMIZER)
        ema = load_file(folder / EMA) if (folder / EMA).is_file() else None
    except (OSError, ValueError) as e:
        raise TrainingError(f"the checkpoint in {folder} cannot be read: {e}") from None
    if record is not None and state["record"] != json.loads(json.dumps(record)):
        changed = sorted(k for k in {*state["record"], *record} if state["record"].get(k) != record.get(k))
        raise TrainingError(f"{folder} holds a run with other settings ({', '.join(changed)} differ): resume "
                            "with the same settings, or use another folder")
    return Checkpoint(state["step"], weights, optimizer_from_tensors(optimizer, state["param_groups"]), ema,
                      state["record"], state.get("counters", {}))
