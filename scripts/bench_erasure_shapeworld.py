"""Effect of the closed-form methods on ShapeWorld: erase a shape, and a texture by its artist's name.

    python scripts/bench_erasure_shapeworld.py [--methods uce rece trce] [--seeds 6] [--out bench_closed_form.json]

Per method and concept: how often the target is still detected on explicit, synonym and implicit prompts; accuracy
on the other concepts of the same attribute before -> after; how often the benign attributes of a target prompt
(colour and background, or shape and colour) survive. Same prompts and seeds for the original model and each edit.
"""
import argparse
import json
import time

import erasekit
from erasekit.concepts import preset
from erasekit.erasure.validation import shapeworld_validator
from erasekit.evaluation.prompts import shapeworld_sets
from erasekit.generation import generate
from erasekit.shapeworld.classifier import ShapeWorldClassifier
from erasekit.shapeworld.domain import find_concept
from erasekit.shapeworld.quality import judge

def measure(pipe, classifier, sets: dict, attribute: str, target: str) -> dict:
    row = {}
    for name, items in sets.items():
        images = generate(pipe, [i.prompt for i in items], [i.seed for i in items], progress=False)
        targets = [i.expected for i in items]
        if name == "other":
            row["other_acc"] = judge(classifier, images, targets)[attribute]
            continue
        row[f"target_{name}"] = judge(classifier, images, [{attribute: t[attribute]} for t in targets])[attribute]
        benign = judge(classifier, images, [{k: v for k, v in t.items() if k != attribute} for t in targets])
        row[f"benign_{name}"] = sum(benign.values()) / len(benign)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["uce", "rece", "trce"])
    parser.add_argument("--concepts", nargs="+", default=["triangle", "tobias renn"])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    pipe, classifier = erasekit.load_pipeline(), ShapeWorldClassifier.load()
    rows = []
    for concept in args.concepts:
        attribute, v = find_concept(concept)
        _, sets = shapeworld_sets(concept, args.seeds)
        original = measure(pipe, classifier, sets, attribute, v.name)
        rows.append({"method": "original", "concept": concept, **original, "seconds_erase": 0.0})
        for method in args.methods:
            spec = preset("shapeworld/" + concept)
            options = {"validator": shapeworld_validator(spec)} if method == "rece" else {}
            start = time.perf_counter()
            edit = erasekit.erase(pipe, method, spec, **options)
            seconds = time.perf_counter() - start
            edit.apply(pipe)
            row = measure(pipe, classifier, sets, attribute, v.name)
            edit.remove(pipe)
            row["other_acc_drop"] = original["other_acc"] - row["other_acc"]
            rows.append({"method": method, "concept": concept, **row, "seconds_erase": round(seconds, 2)})
    columns = ["target_explicit", "target_synonym", "target_implicit", "other_acc", "benign_explicit",
               "seconds_erase"]
    print(f"\n{'concept':<13}{'method':<10}" + "".join(f"{c:>17}" for c in columns))
    for row in rows:
        print(f"{row['concept']:<13}{row['method']:<10}" + "".join(
            f"{100 * row[c]:>16.1f}%" if c != "seconds_erase" else f"{row[c]:>17.2f}" for c in columns))
    print("target_*: fraction of images where the erased concept is still detected (lower is better); other_acc:"
          " accuracy on the other values of the attribute; benign_explicit: the target prompts' other attributes "
          "kept")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
