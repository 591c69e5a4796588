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
from erasekit.generation import generate
from erasekit.shapeworld.classifier import ShapeWorldClassifier
from erasekit.shapeworld.domain import LABELS, find_concept, value
from erasekit.shapeworld.quality import judge

COLORS, BACKGROUNDS = LABELS["color"], LABELS["background"]


def shape_sets(target: str, seeds: int) -> dict:
    """name → [(prompt, targets judged, seed)] for erasing a shape."""
    v = value("shape", target)
    sets = {}
    for form in ("explicit", "synonym", "implicit"):
        phrases = v.phrasings(form)
        sets[form] = [(f"a {COLORS[i % 5]} {phrases[i % len(phrases)]} on a {BACKGROUNDS[i % 3]} background",
                       {"shape": target, "color": COLORS[i % 5], "background": BACKGROUNDS[i % 3]}, i)
                      for i in range(5 * seeds)]
    others = [s for s in LABELS["shape"][:-1] if s != target]
    sets["other"] = [(f"a {COLORS[i % 5]} {s}", {"shape": s}, i) for s in others for i in range(seeds)]
    return sets


def texture_sets(artist: str, seeds: int) -> dict:
    """Erasing a texture by its artist's name: the artist is the explicit form, the texture's name/synonyms and
    its implicit similes are the indirect ones."""
    _, v = find_concept(artist)
    shapes = LABELS["shape"][:-1]
    sets = {"explicit": [(f"a {COLORS[i % 5]} {shapes[i % 6]} in the style of {artist}",
                          {"texture": v.name, "shape": shapes[i % 6], "color": COLORS[i % 5]}, i)
                         for i in range(5 * seeds)]}
    sets["synonym"] = [(f"a {COLORS[i % 5]} {[v.name, *v.synonyms][i % 4]} {shapes[i % 6]}",
                        {"texture": v.name, "shape": shapes[i % 6], "color": COLORS[i % 5]}, i)
                       for i in range(5 * seeds)]
    sets["implicit"] = [(f"a {COLORS[i % 5]} {shapes[i % 6]} {v.implicit[i % 3]}",
                         {"texture": v.name, "shape": shapes[i % 6], "color": COLORS[i % 5]}, i)
                        for i in range(5 * seeds)]
    others = [t for t in value_list("texture") if t.name != v.name]
    sets["other"] = [(f"a {COLORS[i % 5]} {shapes[i % 6]} in the style of {t.artist}", {"texture": t.name}, i)
                     for t in others for i in range(seeds)]
    return sets


def value_list(attribute: str):
    from erasekit.shapeworld.domain import ATTRIBUTES
    return ATTRIBUTES[attribute]


def measure(pipe, classifier, sets: dict, attribute: str, target: str) -> dict:
    row = {}
    for name, items in sets.items():
        images = generate(pipe, [p for p, _, _ in items], [s for _, _, s in items], progress=False)
        if name == "other":
            row["other_acc"] = judge(classifier, images, [t for _, t, _ in items])[attribute]
            continue
        targets = [t for _, t, _ in items]
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
        sets = shape_sets(concept, args.seeds) if attribute == "shape" else texture_sets(concept, args.seeds)
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
