"""Preservation, paired: the concept's other values (a style's other artists, a shape's other shapes) drawn by the
original model and by a bench row's edit on the same prompts and seeds, judged image by image; prints one JSON line.

The bench compares two accuracies measured on 144 images (a style at 48 seeds), where one image is 0.7 points: a
1-point aim cannot be told from noise that way. Pairing counts what the edit lost (right before, wrong after) and
gained, on as many seeds as asked:

    python scripts/paired_preservation.py "tobias renn" esd-u --seeds 144
    python scripts/paired_preservation.py "tobias renn" esd-u --seeds 144 --options '{"lam_preserve": 2.0}'
    python scripts/paired_preservation.py "tobias renn" esd-u --edit out/esd-u   # a saved edit, not trained again
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from erasekit.bench.run import row_options, row_spec
from erasekit.detectors.shapeworld import judge_each, shipped_classifier
from erasekit.edits import load_edit
from erasekit.evaluation.prompts import shapeworld_sets
from erasekit.methods import erase
from erasekit.models import load_pipeline
from erasekit.sampling import generate


def correct(pipe, classifier, attribute: str, items) -> list[bool]:
    """Per item: does the image show the value its prompt names?"""
    images = generate(pipe, [i.prompt for i in items], [i.seed for i in items], progress=False)
    return judge_each(images, [i.expected for i in items], classifier)[attribute]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("concept")
    parser.add_argument("row", help="a bench row (bench.VARIANTS), with its options for the concept")
    parser.add_argument("--seeds", type=int, default=144, help="seeds per preserved value (the bench's are 0-47)")
    parser.add_argument("--options", default="{}", help="JSON laid over the row's options")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--edit", default="", help="a saved edit (e.g. tune_shapeworld.py --save) instead of training "
                        "the row; the row then only names it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe, classifier = load_pipeline(None), shipped_classifier()
    attribute, sets = shapeworld_sets(args.concept, args.seeds)
    items = sets["other"]
    before = correct(pipe, classifier, attribute, items)
    method, options = row_options(args.row, args.concept)
    options = {**options, **json.loads(args.options)}
    start = time.perf_counter()
    if args.edit:
        edit, options = load_edit(args.edit), {"edit": args.edit}
    else:
        edit = erase(pipe, method, row_spec(args.row, args.concept), **options)
    seconds = time.perf_counter() - start
    edit.apply(pipe)
    try:
        after = correct(pipe, classifier, attribute, items)
    finally:
        edit.remove(pipe)
    lost = [(i.prompt, i.seed) for b, a, i in zip(before, after, items) if b and not a]
    gained = sum(a and not b for b, a in zip(before, after))
    print(json.dumps({"concept": args.concept, "row": args.row, "options": options, "images": len(items),
                      "original": sum(before), "edited": sum(after),
                      "drop_points": round(100 * (sum(before) - sum(after)) / len(items), 2),
                      "lost": len(lost), "gained": gained, "train_s": round(seconds, 1), "lost_images": lost}))


if __name__ == "__main__":
    main()
