"""GIE's inference overhead on ShapeWorld, as the ratio to plain generation with the same prompts, seeds and sampler
settings, all measured in one run: one untimed warm-up per method, then --repeats rounds of one timed run per method
(a slow spell of the machine hits every method alike); the median per method. Aims (issue #15): parity ≤ 2.0×,
fast ≤ 1.3×.

    python scripts/bench_gie_overhead.py [--images 32] [--repeats 3] [--threads 2] [--concept triangle] [--sld]

Rows: plain; GIE parity (a branch-0 row beside each prompt row in every UNet call); GIE fast (one branch); GIE
parity with the shipped scale adapter (plus one probe pass at the first step); with --sld, SLD's medium preset (one
safety-concept row per image), for comparison.
"""
import argparse
import statistics

import torch

import erasekit
from erasekit.concepts import preset
from erasekit.evaluation.prompts import shapeworld_sets
from erasekit.sampling import generate, sampler_defaults
from erasekit.utils.timing import best_of

ROWS = [("plain", None, {}), ("gie parity", "gie", {"strength": -8.0}),
        ("gie fast", "gie", {"strength": -8.0, "fast": True}), ("gie parity+adapter", "gie", {"adapter": "shipped"})]
SLD_ROW = ("sld medium", "sld", {"strength": "medium"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concept", default="triangle")
    parser.add_argument("--sld", action="store_true", help="also time SLD's medium preset")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = erasekit.load_pipeline(None)
    _, sets = shapeworld_sets(args.concept, seeds=args.images)
    items = [item for name in ("explicit", "implicit") for item in sets[name]][:args.images]
    prompts, seeds = [i.prompt for i in items], [i.seed for i in items]
    spec = preset("shapeworld/" + args.concept)
    edits = {label: erasekit.erase(pipe, method, spec, **options) if method else None
             for label, method, options in ROWS + ([SLD_ROW] if args.sld else [])}

    def timed(edit, warmup: bool) -> float:
        if edit:
            edit.apply(pipe)
        try:
            return best_of(lambda: generate(pipe, prompts, seeds, batch_size=len(seeds), progress=False), 1,
                           warmup=warmup)
        finally:
            if edit:
                edit.remove(pipe)
    times = {label: [timed(edit, warmup=True)] for label, edit in edits.items()}
    for _ in range(args.repeats - 1):
        for label, edit in edits.items():
            times[label].append(timed(edit, warmup=False))
    steps, guidance = sampler_defaults(pipe)
    print(f"\n{len(seeds)} images, {steps} steps, guidance {guidance}, {torch.get_num_threads()} threads, one batch; "
          f"median of {args.repeats} after a warm-up")
    plain = statistics.median(times["plain"])
    print(f"{'method':<20}{'seconds':>9}{'× plain':>9}   runs")
    for label, runs in times.items():
        seconds = statistics.median(runs)
        print(f"{label:<20}{seconds:>9.2f}{seconds / plain:>9.2f}   {', '.join(f'{t:.2f}' for t in runs)}")


if __name__ == "__main__":
    main()
