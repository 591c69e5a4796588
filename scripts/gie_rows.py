"""GIE's bench rows on more images than the bench gives them (issue #15): the target still detected per form
(explicit, synonym, implicit), preservation and benign attributes, for GIE at its default fixed w, its fast mode and
its shipped scale adapter, beside the original model. GIE's sweep protocol (`bench.gie_sweep.sweep_point`): image
seeds from --first-seed (default 100, the sweep's; 200+: seeds no default was tuned on), not the bench's. Prints
one markdown row per (concept, row) with 95 % Wilson intervals; about 4 s a seed per (concept, row) on 2 cores
(64 seeds: 320 images a form, 3-4 min a row).

    python scripts/gie_rows.py --seeds 64 --first-seed 200
"""
import argparse
import time

from erasekit.bench.gie_sweep import FORMS, SEED_OFFSET, sweep_point
from erasekit.bench.run import VARIANTS
from erasekit.bench.table import rate_cell
from erasekit.models import load_pipeline

ROWS = ("original", "gie", "gie-fast", "gie-adapter")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concepts", nargs="+", default=["triangle", "tobias renn"])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--seeds", type=int, default=64, help="seeds per phrasing (5 prompts per form per seed)")
    parser.add_argument("--first-seed", type=int, default=SEED_OFFSET, help="image seeds start here")
    args = parser.parse_args()
    pipe = load_pipeline(None)
    keys = (*FORMS, "preserve", "benign")
    print("| concept | row | " + " | ".join(keys) + " | seconds |")
    print("|---" * (len(keys) + 3) + "|")
    for concept in args.concepts:
        for row in args.rows:
            start = time.perf_counter()
            counts = sweep_point(pipe, concept, None if row == "original" else VARIANTS[row][1], args.seeds,
                                 args.first_seed)
            cells = " | ".join(rate_cell(*counts[key]) for key in keys)
            print(f"| {concept} | {row} | {cells} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
