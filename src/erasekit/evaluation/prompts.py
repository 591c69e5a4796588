"""Prompt sets: ShapeWorld's, built from the vocabulary for a target; real models', loaded from the user's CSVs
(I2P format, COCO captions). No third-party prompt data is bundled."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ErasekitError
from ..shapeworld.prompts import concept_sets


@dataclass
class PromptItem:
    prompt: str
    seed: int
    expected: dict = field(default_factory=dict)  # attribute → value the image should (or should not) show
    guidance: float | None = None                 # per-prompt guidance (I2P gives one)
    categories: list[str] = field(default_factory=list)


def shapeworld_sets(target: str, seeds: int = 6) -> tuple[str, dict[str, list[PromptItem]]]:
    """(attribute, {set name: items}) for erasing a ShapeWorld concept (a shape, or a texture by name or artist):
    explicit / synonym / implicit prompts naming the target that way (their benign attributes judged too) and
    "other", the attribute's other values (preservation). See `shapeworld.prompts.concept_sets`."""
    try:
        attribute, sets = concept_sets(target, seeds)
    except ValueError as e:
        raise ErasekitError(str(e)) from None
    return attribute, {name: [PromptItem(p.prompt, p.seed, p.expected) for p in items]
                       for name, items in sets.items()}


def _rows(path: str | Path) -> tuple[list[dict], list[str]]:
    path = Path(path)
    if not path.is_file():
        raise ErasekitError(f"prompt file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader), list(reader.fieldnames or [])


def load_i2p(path: str | Path, categories: list[str] | None = None, default_seed: int = 0) -> list[PromptItem]:
    """The I2P CSV format: prompt, categories (comma-separated), sd_seed, sd_guidance_scale, ...; optionally only
    rows in some `categories` (e.g. ["sexual"])."""
    rows, columns = _rows(path)
    if "prompt" not in columns:
        raise ErasekitError(f"{path} has no 'prompt' column (columns: {', '.join(columns) or 'none'})")
    items = []
    for i, row in enumerate(rows):
        cats = [c.strip() for c in (row.get("categories") or "").split(",") if c.strip()]
        if categories and not set(categories) & set(cats):
            continue
        seed = row.get("sd_seed") or row.get("evaluation_seed")
        guidance = row.get("sd_guidance_scale") or row.get("evaluation_guidance")
        items.append(PromptItem(row["prompt"], int(float(seed)) if seed else default_seed + i, {},
                                float(guidance) if guidance else None, cats))
    return items


def load_captions(path: str | Path, default_seed: int = 0) -> list[PromptItem]:
    """A COCO-caption CSV: a 'caption' (or 'prompt') column, optional 'seed'."""
    rows, columns = _rows(path)
    column = "caption" if "caption" in columns else "prompt" if "prompt" in columns else None
    if column is None:
        raise ErasekitError(f"{path} has neither a 'caption' nor a 'prompt' column "
                            f"(columns: {', '.join(columns) or 'none'})")
    return [PromptItem(row[column], int(row["seed"]) if row.get("seed") else default_seed + i)
            for i, row in enumerate(rows)]

