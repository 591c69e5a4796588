"""A line plot drawn with Pillow (no plotting library is a dependency): training curves for people to look at."""
from __future__ import annotations

from PIL import Image, ImageDraw

COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75),
           (227, 119, 194), (127, 127, 127))


def line_plot(series: dict[str, list[float | None]], title: str, x_label: str = "round", size=(640, 360),
              y_range: tuple[float, float] | None = None) -> Image.Image:
    """One line per named series over x = 0, 1, …; None values leave a gap. Axes with their ranges, a legend."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 56, 28, size[0] - 16, size[1] - 40
    values = [v for s in series.values() for v in s if v is not None]
    low, high = y_range or ((min(values), max(values)) if values else (0.0, 1.0))
    high = high if high > low else low + 1.0
    n = max((len(s) for s in series.values()), default=1)
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text((left, 8), title, fill="black")
    draw.text((left, bottom + 20), f"{x_label} (0 … {n - 1})", fill="black")
    for frac in (0.0, 0.5, 1.0):
        y = bottom - frac * (bottom - top)
        draw.text((4, y - 6), f"{low + frac * (high - low):.3g}", fill="black")
        draw.line([left - 4, y, left, y], fill="black")

    def point(i: int, v: float) -> tuple[float, float]:
        return (left + (right - left) * (i / max(n - 1, 1)), bottom - (bottom - top) * (v - low) / (high - low))
    legend_x = right - 8 - max((draw.textlength(name) for name in series), default=0)
    for k, (name, values_k) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = [point(i, v) for i, v in enumerate(values_k) if v is not None]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        draw.text((legend_x, top + 6 + 14 * k), name, fill=colour)
    return image
