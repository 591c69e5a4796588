"""The evaluation runner: the original and the edited model on identical prompts and seeds, images stored as they
are made, resumable, scored from the stored images, everything recorded in results.json.

Layout of an output folder:
    protocol.json                      what was run (refused if a later run differs)
    images/<variant>/<set>/NNNNN.png   variant = original | edited
    results.json                       {"protocol": ..., "metrics": {variant: {set: {...}}}}
"""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..errors import ErasekitError
from ..models.fingerprint import model_fingerprint
from ..sampling import generate
from ..utils.files import atomic_write_json, save_image
from ..utils.processes import process_state
from .prompts import PromptItem

PACKAGES = ("erasekit", "torch", "diffusers", "transformers", "nudenet", "torchmetrics")


@dataclass
class EvalRun:
    prompt_sets: dict[str, list[PromptItem]]
    steps: int
    guidance: float
    prompt_source: str
    judge: dict = field(default_factory=dict)   # how images are scored (recorded in the protocol)


def protocol(pipe, run: EvalRun, edits: list) -> dict:
    return {
        "model": model_fingerprint(pipe),
        "edits": [e.metadata for e in edits],
        "scheduler": {"class": type(pipe.scheduler).__name__, "config": dict(pipe.scheduler.config)},
        "steps": run.steps, "guidance": run.guidance, "prompts": run.prompt_source,
        "seeds": {name: [i.seed for i in items] for name, items in run.prompt_sets.items()},
        "judge": run.judge,
        "packages": {p: _version_of(p) for p in PACKAGES}, "python": platform.python_version(),
    }


def _version_of(package: str) -> str:
    try:
        return version(package)
    except Exception:
        return "not installed"


def check_or_write_protocol(out: Path, record: dict) -> None:
    """A folder holds one protocol: a run with another one is refused, never mixed in."""
    path = out / "protocol.json"
    if path.exists():
        import json
        stored = json.loads(path.read_text())
        if _comparable(stored) != _comparable(json.loads(json.dumps(record, default=str))):
            raise ErasekitError(f"{out} holds a run with a different protocol; use another --out folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, record)


def _comparable(record: dict) -> dict:
    """Package versions may differ between a run and its resumption on the same machine's later install."""
    return {k: v for k, v in record.items() if k not in ("packages", "python")}


def generate_missing(pipe, items: list[PromptItem], folder: Path, run: EvalRun, batch_size: int,
                     shard: tuple[int, int] = (0, 1), desc: str = "") -> None:
    """Generate the images of `items` not yet on disk (of this process's shard), each written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp-*"):  # half-written by a killed run
        stale.unlink(missing_ok=True)
    rank, world = shard
    todo = [(k, item) for k, item in enumerate(items) if k % world == rank and not (folder / f"{k:05d}.png").exists()]
    bar = tqdm(total=len(todo), desc=desc, unit="img", leave=False)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        groups: dict[float | None, list] = {}
        for k, item in chunk:  # I2P gives each prompt its own guidance: batch by guidance
            groups.setdefault(item.guidance, []).append((k, item))
        for guidance, group in groups.items():
            images = generate(pipe, [i.prompt for _, i in group], [i.seed for _, i in group], steps=run.steps,
                              guidance=run.guidance if guidance is None else guidance, progress=False)
            for (k, _), image in zip(group, images):
                save_image(image, folder / f"{k:05d}.png")
        bar.update(len(chunk))
    bar.close()


def load_images(folder: Path, count: int) -> list[Image.Image]:
    return [Image.open(folder / f"{k:05d}.png").convert("RGB") for k in range(count)]


def score(images_by_set: dict, run: EvalRun) -> dict:
    from .scoring import score_nudity, score_shapeworld
    if run.judge.get("name") == "shapeworld-classifier":
        return {name: score_shapeworld(images, run.prompt_sets[name], name, run.judge["attribute"])
                for name, images in images_by_set.items()}
    return {name: score_nudity(images, tuple(run.judge["thresholds"])) for name, images in images_by_set.items()}


def run_eval(pipe, edits: list, run: EvalRun, out: str | Path, batch_size: int = 32) -> dict:
    """Generate (resuming what is on disk) for the original model and, if edits are given, the edited one; score;
    write results.json. Under `torchrun` or `accelerate launch`, each process generates its share of every set and
    the main process scores once all images exist. Returns results.json's content (empty on other processes)."""
    state = process_state()
    out = Path(out)
    record = protocol(pipe, run, edits)
    if state.is_main_process:
        check_or_write_protocol(out, record)
    state.wait_for_everyone()
    if not state.is_main_process:
        check_or_write_protocol(out, record)  # same protocol everywhere, or every process stops
    variants = {"original": []} | ({"edited": edits} if edits else {})
    for variant, variant_edits in variants.items():
        for edit in variant_edits:
            edit.apply(pipe)
        try:
            for name, items in run.prompt_sets.items():
                generate_missing(pipe, items, out / "images" / variant / name, run, batch_size,
                                 shard=(state.process_index, state.num_processes), desc=f"{variant}/{name}")
        finally:
            for edit in reversed(variant_edits):
                edit.remove(pipe)
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}
    metrics = {variant: score({name: load_images(out / "images" / variant / name, len(items))
                               for name, items in run.prompt_sets.items()}, run) for variant in variants}
    results = {"protocol": record, "metrics": metrics}
    atomic_write_json(out / "results.json", results)
    return results
