"""GIE scale adapters for one ShapeWorld concept at several fit margins, from one strength search (the costly part,
cached in OUT/search.pt), each measured by GIE's sweep protocol (`bench.gie_sweep.sweep_point`, image seeds from
--first-seed: 100, not the bench's 0–3). The margin multiplies the smallest erasing |w| the fit aims at
(`adapter_training.fit`); a margin's adapter is what `erasekit gie-adapter --margin M` writes (same search, same
fit: byte for byte). Prints, per margin, the target detected per form, preservation and benign attributes kept.

    python scripts/gie_adapter_margins.py --concept "tobias renn" --margins 1.4 1.6 1.8 --out out/adapter_margins
"""
import argparse
import time
from pathlib import Path

import torch

from erasekit.bench.gie_sweep import FORMS, SEED_OFFSET, sweep_point
from erasekit.bench.table import rate_cell
from erasekit.concepts import preset
from erasekit.detectors import for_concept
from erasekit.methods.gie import save_adapter
from erasekit.methods.gie.adapter_training import (AdapterTraining, fit, shapeworld_prompts, smallest_strengths,
                                                  training_report)
from erasekit.models import load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concept", default="tobias renn")
    parser.add_argument("--margins", nargs="+", type=float, default=[1.4, 1.6, 1.8])
    parser.add_argument("--seeds", type=int, default=16, help="seeds per phrasing for the measurement")
    parser.add_argument("--first-seed", type=int, default=SEED_OFFSET)
    parser.add_argument("--out", default="out/adapter_margins", help="search cache and one adapter folder a margin")
    args = parser.parse_args()
    pipe, spec = load_pipeline(None), preset(f"shapeworld/{args.concept}")
    prompts, out = shapeworld_prompts(spec), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache, start = out / "search.pt", time.perf_counter()
    if cache.exists():  # written by this script: tensors and a list of dicts, loaded without pickle's objects
        features, labels, table = torch.load(cache, weights_only=True)
    else:
        features, labels, table = smallest_strengths(pipe, spec, prompts, for_concept(args.concept, "shapeworld"),
                                                     AdapterTraining())
        torch.save((features, labels, table), cache)
    search = time.perf_counter() - start
    keys = (*FORMS, "preserve", "benign")
    print("| margin | fit MAE | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 2) + "|")
    for margin in args.margins:
        cfg = AdapterTraining(margin=margin)
        adapter, mae = fit(features, labels, cfg)
        folder = out / f"margin-{margin:g}"
        save_adapter(adapter, folder, training_report(spec, prompts, labels, table, cfg, mae, search))
        counts = sweep_point(pipe, args.concept, {"adapter": str(folder)}, args.seeds, args.first_seed)
        print(f"| {margin:g} | {mae:.4f} | " + " | ".join(rate_cell(*counts[k]) for k in keys) + " |", flush=True)


if __name__ == "__main__":
    main()
