"""Write the README's ShapeWorld picture: every shape x colour, procedural (left) and generated (right).

    python scripts/shapeworld_grid.py --out docs/shapeworld_grid.png [--model M] [--seed 0]
"""
import argparse
from pathlib import Path

from PIL import Image

import erasekit
from erasekit.sampling import generate
from erasekit.shapeworld.captions import prompt
from erasekit.shapeworld.domain import LABELS, Scene
from erasekit.shapeworld.render import render
from erasekit.utils.files import grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/shapeworld_grid.png")
    parser.add_argument("--model", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shapes, colors = LABELS["shape"][:-1], LABELS["color"]
    pairs = [(s, c) for s in shapes for c in colors]
    real = [Image.fromarray(render(Scene(s, c, "solid", "white"), args.seed + i)) for i, (s, c) in enumerate(pairs)]
    pipe = erasekit.load_pipeline(args.model)
    fake = generate(pipe, [prompt(s, c) for s, c in pairs], [args.seed + i for i in range(len(pairs))])
    left, right = grid(real, len(colors), scale=3), grid(fake, len(colors), scale=3)
    sheet = Image.new("RGB", (left.width + right.width + 12, left.height), (255, 255, 255))
    sheet.paste(left, (0, 0))
    sheet.paste(right, (left.width + 12, 0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out}: rows {', '.join(shapes)}; columns {', '.join(colors)}")


if __name__ == "__main__":
    main()
