"""GIE's strength sweep on ShapeWorld: target detection, preservation and benign attributes against |w|, for the
paper's additive inhibitor and erasekit's projection inhibitor, each with the paper's step window (the first 80 %
of steps) and with every step. Where GIE's defaults come from (`methods.gie`); the bench report shows its plots.

Seeds are the bench's plus SEED_OFFSET, so the defaults are not picked on the bench's own images (the held-out
phrasings of the bench are not used at all).

    python scripts/gie_sweep.py --out bench        # bench/gie_sweep.json and one plot per concept
"""
from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from ..evaluation.prompts import shapeworld_sets
from ..evaluation.scoring import score_shapeworld
from ..methods import erase
from ..sampling import generate
from ..utils.files import atomic_write_json, save_image, slug
from ..utils.plot import line_plot
from .table import rate_cell, tally

STRENGTHS = (0.0, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0)  # |w|; 0 is the original model
SETTINGS = {  # label → GIE options besides the strength
    "projection, all steps": {"inhibitor": "projection", "cross_fraction": 1.0},
    "projection, first 80 %": {"inhibitor": "projection", "cross_fraction": 0.8},
    "additive, all steps": {"inhibitor": "additive", "cross_fraction": 1.0},
    "additive, first 80 % (paper)": {"inhibitor": "additive", "cross_fraction": 0.8},
}
SEED_OFFSET = 100
FORMS = ("explicit", "synonym", "implicit")


def sweep_point(pipe, concept: str, options: dict, seeds: int, offset: int = SEED_OFFSET) -> dict:
    """Counts [k, n] of one GIE setting (or the original model when `options` is None): target detected per form
    and pooled, preservation on the siblings, benign attributes of the explicit prompts; image seeds from
    `offset`."""
    edit = erase(pipe, "gie", [f"shapeworld/{concept}"], **options) if options is not None else None
    if edit is not None:
        edit.apply(pipe)
    try:
        counts = form_counts(pipe, concept, seeds, offset)
    finally:
        if edit is not None:
            edit.remove(pipe)
    counts["target"] = [sum(counts[f][0] for f in FORMS), sum(counts[f][1] for f in FORMS)]
    return counts


def form_counts(pipe, concept: str, seeds: int, offset: int = SEED_OFFSET) -> dict:
    """Counts [k, n] of the model as it stands: the target detected per form (the bench's sets, `seeds` a
    phrasing), preservation on the siblings ("preserve"), benign attributes of the explicit prompts ("benign");
    image seeds from `offset`."""
    attribute, sets = shapeworld_sets(concept, seeds)
    counts = {}
    for name, items in sets.items():
        images = generate(pipe, [i.prompt for i in items], [i.seed + offset for i in items], progress=False)
        scores = score_shapeworld(images, items, name, attribute)
        if name == "other":
            counts["preserve"] = tally(scores["accuracy"], len(items))
            continue
        counts[name] = tally(scores["target_detected"], len(items))
        if name == "explicit":
            counts["benign"] = tally(scores["benign_kept"], sum(len(i.expected) - 1 for i in items))
    return counts


def run_sweep(pipe, concepts=("triangle", "tobias renn"), out: str | Path = "bench", seeds: int = 2,
              strengths=STRENGTHS, settings=SETTINGS, progress: bool = True) -> dict:
    """Every setting at every |w| (|w| = 0 once: the original), for each concept; writes gie_sweep.json and
    gie_sweep_<concept>.png into `out` and returns the results."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"strengths": list(strengths), "seeds": seeds, "seed_offset": SEED_OFFSET, "concepts": {}}
    bar = tqdm(total=len(concepts) * (1 + len(settings) * sum(1 for w in strengths if w)), desc="GIE sweep",
               disable=not progress)
    for concept in concepts:
        original = sweep_point(pipe, concept, None, seeds)
        bar.update()
        table = {}
        for label, options in settings.items():
            table[label] = [original if not w else sweep_point(pipe, concept, {**options, "strength": -w}, seeds)
                            for w in strengths]
            bar.update(sum(1 for w in strengths if w))
        results["concepts"][concept] = table
        save_image(sweep_plot(concept, table, strengths), out / plot_name(concept))
    bar.close()
    atomic_write_json(out / "gie_sweep.json", results)
    return results


def plot_name(concept: str) -> str:
    return f"gie_sweep_{slug(concept)}.png"


def sweep_plot(concept: str, table: dict, strengths):
    """Target detected (pooled over the three forms) per setting; preservation and benign attributes of the first
    setting (the default)."""
    def rate(points, key):
        return [p[key][0] / p[key][1] for p in points]
    series = {f"target · {label}": rate(points, "target") for label, points in table.items()}
    default, points = next(iter(table.items()))
    series[f"preserve · {default}"] = rate(points, "preserve")
    series[f"benign · {default}"] = rate(points, "benign")
    grid = ", ".join(f"{w:g}" for w in strengths)
    return line_plot(series, f"GIE on “{concept}”: rate against |w|", x_label=f"|w| = {grid}", size=(760, 420),
                     y_range=(0.0, 1.0))


def sweep_lines(results: dict) -> list[str]:
    """Markdown rows: concept, setting, |w|, target detected, preservation, benign kept (rate% [Wilson] (k/n))."""
    lines = []
    for concept, table in results["concepts"].items():
        for label, points in table.items():
            for w, p in zip(results["strengths"], points):
                cells = " | ".join(rate_cell(*p[key]) for key in ("target", "preserve", "benign"))
                lines.append(f"| {concept} | {label} | {w:g} | {cells} |")
    return lines


def load_sweep(folder: str | Path) -> dict | None:
    path = Path(folder) / "gie_sweep.json"
    return json.loads(path.read_text()) if path.is_file() else None
