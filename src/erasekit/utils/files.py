"""Atomic writes (one file, or one folder as a set) and image grids: a crash never leaves a half-written file
that a later run would read."""
from __future__ import annotations

import json
import math
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from PIL import Image


def slug(name: str) -> str:
    """A concept as it appears in file names: "tobias renn" → "tobias-renn"."""
    return name.replace(" ", "-")


def temporary_sibling(path: Path, suffix: str = "") -> Path:
    """A hidden name beside `path` for writing before the rename (per process, so parallel writers never share)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}{suffix}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = temporary_sibling(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_tensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """safetensors file written under a temporary name and renamed into place."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=str).encode())


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary sibling folder to fill; on success it replaces `path` in one rename, on error it is
    deleted, so `path` is never left half-written."""
    path = Path(path)
    tmp = temporary_sibling(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_image(image: Image.Image, path: Path) -> None:
    tmp = temporary_sibling(path, ".png")
    image.save(tmp)
    os.replace(tmp, path)


def grid(images: list[Image.Image], columns: int | None = None, scale: int = 1, pad: int = 2) -> Image.Image:
    """Tile images (all the size of the first) into a grid, optionally upscaled with nearest-neighbour."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    w, h = images[0].size
    w, h = w * scale, h * scale
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        sheet.paste(image.resize((w, h), Image.NEAREST), (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet
