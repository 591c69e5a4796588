"""`erasekit harden`'s one call: load the edit and the model, harden, write the edit with its history plot."""
from __future__ import annotations

from pathlib import Path

from ..edits import load_edit
from ..errors import ErasekitError
from ..models import load_pipeline
from ..utils.files import atomic_dir, save_image
from ..utils.plot import line_plot
from .config import HardenConfig, check_request
from .loop import harden

PLOT = "history.png"


def history_plot(history: list[dict]):
    """Each attack's success rate, the preservation accuracy and (where checked) the benign content kept per
    attempt: every round, and a round refused by a floor before its gentler retry."""
    attacks = list(history[0]["success"])
    series = {f"{a} success": [h["success"][a] for h in history] for a in attacks}
    series["preservation"] = [h["preservation"] for h in history]
    if history[0].get("benign") is not None:
        series["benign kept"] = [h["benign"] for h in history]
    return line_plot(series, "hardening: attack success and preservation per attempt", x_label="attempt",
                     y_range=(0.0, 1.0))


def harden_folder(edit_dir: str | Path, out: str | Path, model: str | None = None, overwrite: bool = False,
                  log=None, **options):
    """Harden the edit saved in `edit_dir` on `model` (default ShapeWorld) and write it to `out` (edit.json,
    tensors, history.png) in one step: on any error nothing is written. Returns the hardened edit."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ErasekitError(f"{out} already exists; choose another folder or pass --overwrite")
    edit = load_edit(edit_dir)
    check_request(edit, HardenConfig(**options))  # before the model loads
    pipe = load_pipeline(model)
    hardened = harden(pipe, edit, log=log, **options)
    save_hardened(hardened, out)
    return hardened


def save_hardened(hardened, out: str | Path) -> Path:
    """A hardened edit (edit.json, tensors) and its rounds' plot (history.png) written to `out` in one step."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        hardened.save(tmp, overwrite=True)
        save_image(history_plot(hardened.metadata["protocol"]["hardening"]["rounds"]), tmp / PLOT)
    return out
