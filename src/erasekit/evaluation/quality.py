"""Measure ShapeWorld's quality bars and print a table.

    python -m erasekit.evaluation.quality [--model M] [--per-combination 4] [--out quality.json]

Rows: the classifier on held-out procedural images; the pipeline on explicit prompts over the whole attribute grid
(shape x colour x texture x background, fixed seeds), on synonym and implicit shape prompts, and on texture named by
its artist — each judged by the classifier, with the model's default sampler settings.
"""
from __future__ import annotations

import argparse
import json
import time
from itertools import product

from ..detectors import judge
from ..detectors.shapeworld import shipped_classifier
from ..models import load_pipeline
from ..sampling import generate, sampler_defaults
from ..shapeworld.captions import prompt
from ..shapeworld.classifier import ShapeWorldClassifier, evaluate, held_out
from ..shapeworld.domain import LABELS, SHAPE_NAMES

BARS = {"classifier": {a: 0.98 for a in LABELS},
        "explicit": {"shape": 0.90, "color": 0.90, "texture": 0.80, "background": 0.90},
        "synonym": {"shape": 0.85}, "implicit": {"shape": 0.80}}


def prompt_sets(per_combination: int, per_phrasing: int) -> dict[str, list[tuple[str, dict, int]]]:
    """name → [(prompt, target attributes, seed)]."""
    shapes = SHAPE_NAMES
    explicit = [(prompt(s, c, t, b), {"shape": s, "color": c, "texture": t, "background": b}, seed)
                for s, c, t, b in product(shapes, LABELS["color"], LABELS["texture"], LABELS["background"])
                for seed in range(per_combination)]
    sets = {"explicit": explicit}
    for form in ("synonym", "implicit"):
        sets[form] = [(prompt(s, shape_form=form, index=k), {"shape": s}, seed)
                      for s in shapes for k in range(3) for seed in range(per_phrasing)]
    sets["artist"] = [(prompt(s, texture=t, texture_form="artist"), {"shape": s, "texture": t}, seed)
                      for s in shapes for t in LABELS["texture"] for seed in range(per_phrasing // 2)]
    return sets


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline folder (default: the embedded ShapeWorld model)")
    parser.add_argument("--classifier", default=None, help="classifier folder (default: the shipped one)")
    parser.add_argument("--per-combination", type=int, default=4, help="images per explicit combination")
    parser.add_argument("--per-phrasing", type=int, default=8, help="images per synonym/implicit phrasing")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    parser.add_argument("--sets", nargs="+", default=None, help="only these sets (explicit synonym implicit artist)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    classifier = ShapeWorldClassifier.load(args.classifier) if args.classifier else shipped_classifier()
    results = {"classifier": evaluate(classifier, *held_out(3000, seed=424_242))}
    pipe = load_pipeline(args.model)
    timings = {}
    for name, items in prompt_sets(args.per_combination, args.per_phrasing).items():
        if args.sets and name not in args.sets:
            continue
        t0 = time.time()
        images = generate(pipe, [p for p, _, _ in items], [s for _, _, s in items], batch_size=64,
                          steps=args.steps, guidance=args.guidance)
        timings[name] = round(time.time() - t0, 1)
        results[name] = judge(images, [t for _, t, _ in items], classifier)
        results[name]["images"] = len(items)
    print(f"\n{'set':<11}{'images':>7}  " + "".join(f"{a:>12}" for a in LABELS))
    for name, scores in results.items():
        cells = []
        for a in LABELS:
            if a not in scores:
                cells.append(f"{'':>12}")
                continue
            bar = BARS.get(name, {}).get(a)
            mark = "" if bar is None else (" ok" if scores[a] >= bar else " <")
            cells.append(f"{100 * scores[a]:>9.1f}{mark:<3}")
        print(f"{name:<11}{scores.get('images', 3000):>7}  " + "".join(cells))
    print("'<' marks a figure below its bar; bars: " + json.dumps(BARS))
    print("generation seconds per set: " + json.dumps(timings))
    if args.out:
        steps, guidance = sampler_defaults(pipe)
        with open(args.out, "w") as f:
            json.dump({"results": results, "bars": BARS, "seconds": timings,
                       "sampler": {"steps": args.steps or steps,
                                   "guidance": guidance if args.guidance is None else args.guidance,
                                   "scheduler": type(pipe.scheduler).__name__}}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
