"""Procedural ShapeWorld images: one object, roughly centred, drawn deterministically from a seed."""
from __future__ import annotations

import numpy as np

from .domain import LABELS, NO_OBJECT, Scene

IMAGE_SIZE = 32
SUPERSAMPLE = 4  # render at 4x and box-filter down, for anti-aliased edges

RGB = {
    "red": (215, 40, 40), "green": (40, 175, 60), "blue": (45, 85, 225), "yellow": (235, 205, 35),
    "purple": (150, 60, 205),
    "black": (18, 18, 24), "white": (236, 236, 232), "gray": (128, 128, 128),
}
P_EMPTY = 0.06


def sample_scene(rng: np.random.Generator, p_empty: float | None = P_EMPTY, show: dict[str, str] | None = None
                 ) -> Scene:
    """A random scene, the world's one scene sampler: each attribute uniform (the shape among the real shapes);
    then no object with probability `p_empty` (None: always an object, and no draw for it); then the attributes
    in `show` fixed."""
    pick = {a: labels[rng.integers(len(labels) - (a == "shape"))] for a, labels in LABELS.items()}
    if p_empty is not None and rng.random() < p_empty:
        pick["shape"] = NO_OBJECT
    return Scene(**{**pick, **(show or {})})


def scene_images(count: int, seed: int, *, show: dict[str, str] | None = None, exclude: str | None = None,
                 p_empty: float | None = P_EMPTY, render_seed: int | None = None) -> tuple[list[Scene], np.ndarray]:
    """`count` scenes from `sample_scene` and their renders, all from one seed. `exclude`: a value no scene may
    show (such scenes are drawn again). Renders draw from the scenes' generator, or, given `render_seed`, image i
    from its own seed `render_seed + i`."""
    rng = np.random.default_rng(seed)
    scenes, images = [], []
    while len(scenes) < count:
        scene = sample_scene(rng, p_empty, show)
        if exclude is not None and exclude in (scene.shape, scene.color, scene.texture, scene.background):
            continue
        images.append(render(scene, rng if render_seed is None else render_seed + len(scenes)))
        scenes.append(scene)
    return scenes, np.stack(images) if images else np.empty((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """dx, dy: offsets from the object centre in pixels (y grows downwards); r: the object's radius."""
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(ax, ay) <= 0.82 * r
    if shape == "diamond":
        return ax / 0.85 + ay <= 1.05 * r
    if shape == "triangle":  # apex up
        top, bottom = -r, 0.75 * r
        return (dy >= top) & (dy <= bottom) & (ax <= (dy - top) * 0.62)
    if shape == "cross":
        arm = 0.34 * r
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    if shape == "star":
        theta = np.arctan2(dx, -dy)  # 0 at the top point
        phase = np.mod(theta * 5 / (2 * np.pi), 1.0)
        tri = np.abs(phase - 0.5) * 2  # 1 at points, 0 between
        radius = r * (0.45 + 0.6 * tri**1.3)
        return np.hypot(dx, dy) <= radius
    raise ValueError(f"unknown shape {shape!r}")


def _texture_mask(texture: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True where the texture's second (darker) tone is drawn. x, y in pixels."""
    ox, oy = rng.uniform(0, 8, size=2)
    if texture == "solid":
        return np.zeros_like(x, dtype=bool)
    if texture == "striped":
        return np.mod(x + y + ox, 5.0) < 2.5
    if texture == "dotted":
        px, py = np.mod(x + ox, 5.0) - 2.5, np.mod(y + oy, 5.0) - 2.5
        return px**2 + py**2 <= 1.35**2
    if texture == "checkered":
        return (np.floor((x + ox) / 3.5) + np.floor((y + oy) / 3.5)) % 2 == 1
    raise ValueError(f"unknown texture {texture!r}")


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def render(scene: Scene, seed: int | np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw `scene` as an HxWx3 uint8 array. The same (scene, seed) always gives the same pixels."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n = size * SUPERSAMPLE
    coords = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE
    x, y = np.meshgrid(coords, coords)
    image = np.broadcast_to(_jitter(RGB[scene.background], rng, 10), (n, n, 3)).copy()
    if scene.shape != NO_OBJECT:
        cx, cy = size / 2 + rng.uniform(-3, 3, size=2) * size / 32
        r = rng.uniform(9.0, 12.0) * size / 32
        mask = _shape_mask(scene.shape, x - cx, y - cy, r)
        dark = _texture_mask(scene.texture, x * 32 / size, y * 32 / size, rng)
        color = _jitter(RGB[scene.color], rng, 14)
        image[mask] = color
        image[mask & dark] = color * 0.38
    small = image.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.round(small).astype(np.uint8)
