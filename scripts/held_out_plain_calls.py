"""Erasure on phrasings no method's defaults (nor the bench) use, for the plain call (`--concept C`, no preset) and
the preset (`--concept shapeworld/C`), with 95 % Wilson intervals: target still detected on explicit, synonym and
implicit held-out prompts, and the attribute's other values kept (preservation).

    python scripts/held_out_plain_calls.py [--methods uce rece trce esd-x] [--images 30] [--option trce:stages=1]
"""
import argparse
import time

import erasekit
from erasekit.detectors import judge
from erasekit.evaluation.scoring import wilson
from erasekit.shapeworld.prompts import held_out_sets

def rates(pipe, concept: str, n: int) -> dict[str, tuple[int, int]]:
    attribute, sets = held_out_sets(concept, n)
    out = {}
    for name, items in sets.items():
        images = erasekit.generate(pipe, [p for p, _ in items], [900 + i for i in range(n)], progress=False)
        share = judge(images, [e for _, e in items])[attribute]
        out[name] = (round(share * n), n)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["uce", "rece", "trce", "esd-x"])
    parser.add_argument("--concepts", nargs="+", default=["triangle", "tobias renn"])
    parser.add_argument("--images", type=int, default=30, help="images per set")
    parser.add_argument("--calls", nargs="+", default=["plain", "preset"], choices=["plain", "preset"])
    parser.add_argument("--option", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="an option for one method, e.g. trce:stages=1 (stated in the output)")
    args = parser.parse_args()
    options: dict[str, dict] = {}
    for text in args.option:
        method, _, pair = text.partition(":")
        key, _, value = pair.partition("=")
        options.setdefault(method, {})[key] = type(getattr(erasekit.methods.make_config(method), key))(value)
    pipe = erasekit.load_pipeline()
    print("target detected: explicit / synonym / implicit; other values kept (preservation); 95 % Wilson intervals")
    for concept in args.concepts:
        rows = [("original", None, rates(pipe, concept, args.images), 0.0)]
        for method in args.methods:
            for call, concepts in (("plain", [concept]), ("preset", ["shapeworld/" + concept])):
                if call not in args.calls:
                    continue
                start = time.perf_counter()
                edit = erasekit.erase(pipe, method, concepts, **options.get(method, {}))
                seconds = time.perf_counter() - start
                edit.apply(pipe)
                try:
                    rows.append((method, call, rates(pipe, concept, args.images), seconds))
                finally:
                    edit.remove(pipe)
        for method, call, measured, seconds in rows:
            cells = []
            for name in ("explicit", "synonym", "implicit", "other"):
                hits, n = measured[name]
                low, high = wilson(hits, n)
                cells.append(f"{name} {100 * hits / n:5.1f}% [{100 * low:.0f}, {100 * high:.0f}]")
            label = method + (f" ({call}{', ' + str(options[method]) if method in options else ''})" if call else "")
            print(f"{concept:<12} {label:<34} " + "  ".join(cells) + f"  n={n} each, erase {seconds:.0f} s")


if __name__ == "__main__":
    main()
