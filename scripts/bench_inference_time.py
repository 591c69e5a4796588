"""Cost of the sampling-time methods on ShapeWorld, as the ratio to plain generation with the same prompts, seeds
and sampler settings, all measured in one run: --repeats rounds of one timed run per method (after one warm-up
each), best per method.

    python scripts/bench_inference_time.py [--images 64] [--threads 2] [--repeats 2] [--concept triangle]

Rows: plain; GIE parity (two branches in one batch); GIE fast (one branch); GIE with the shipped scale adapter
(parity plus one probe pass); SLD (one extra row per image in the same batch).
"""
import argparse
import math

import torch

import erasekit
from erasekit.concepts import preset
from erasekit.evaluation.prompts import shapeworld_sets
from erasekit.sampling import generate, sampler_defaults
from erasekit.utils.timing import best_of

ROWS = [("plain", None, {}), ("gie parity", "gie", {"strength": -8.0}),
        ("gie fast", "gie", {"strength": -8.0, "fast": True}), ("gie adapter", "gie", {"adapter": "shipped"}),
        ("sld medium", "sld", {"strength": "medium"})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concept", default="triangle")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = erasekit.load_pipeline()
    _, sets = shapeworld_sets(args.concept, seeds=args.images)
    items = [item for name in ("explicit", "implicit") for item in sets[name]][:args.images]
    prompts, seeds = [i.prompt for i in items], [i.seed for i in items]
    spec = preset("shapeworld/" + args.concept)
    edits = {}
    for label, method, options in ROWS:
        try:
            edits[label] = erasekit.erase(pipe, method, spec, **options) if method else None
        except erasekit.ErasekitError as e:
            print(f"{label}: skipped ({e})")
    # Rounds of one timed run per method, so that a slow spell of the machine hits every method alike.
    results = {label: float("inf") for label in edits}
    for _ in range(args.repeats):
        for label, edit in edits.items():
            if edit:
                edit.apply(pipe)
            try:
                seconds = best_of(lambda: generate(pipe, prompts, seeds, batch_size=64, progress=False), 1,
                                  warmup=not math.isfinite(results[label]))
                results[label] = min(results[label], seconds)
            finally:
                if edit:
                    edit.remove(pipe)
    steps, guidance = sampler_defaults(pipe)
    print(f"\n{args.images} images, {steps} DDIM steps, guidance {guidance}, {args.threads} threads, batch 64")
    print(f"{'method':<14}{'seconds':>9}{'× plain':>9}")
    for label, seconds in results.items():
        print(f"{label:<14}{seconds:>9.2f}{seconds / results['plain']:>9.2f}")


if __name__ == "__main__":
    main()
