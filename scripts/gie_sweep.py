"""GIE's strength sweep on ShapeWorld (issue #15): target detection, preservation and benign attributes against |w|
for the paper's additive inhibitor and erasekit's projection inhibitor, with the paper's step window (first 80 %)
and with every step. Writes OUT/gie_sweep.json and OUT/gie_sweep_<concept>.png (the bench report shows them) and
prints the table. About 10 min on 2 cores.

    python scripts/gie_sweep.py --out bench
"""
import argparse

from erasekit.bench.gie_sweep import run_sweep, sweep_lines
from erasekit.models import load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench", help="folder for gie_sweep.json and the plots (default: bench)")
    parser.add_argument("--concepts", nargs="+", default=["triangle", "tobias renn"])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per phrasing (10 prompts per form per seed)")
    args = parser.parse_args()
    results = run_sweep(load_pipeline(None), args.concepts, args.out, args.seeds)
    print("| concept | setting | abs(w) | target detected | preservation | benign kept |")
    print("|---|---|---|---|---|---|")
    print("\n".join(sweep_lines(results)))


if __name__ == "__main__":
    main()
