"""`erasekit bench` and `erasekit report`."""
from __future__ import annotations

from .options import COUNT, add_model


def add_parsers(sub) -> None:
    from ..bench import DEFAULT_CONCEPTS, PROFILES
    from ..bench.table import ATTACK_COLUMNS
    p = sub.add_parser("bench", help="run the method x concept benchmark on ShapeWorld",
                       description="Erase each concept with each method and measure erasure (explicit, synonym, "
                       "implicit prompts), preservation, benign attributes kept, Fréchet distance, Ring-A-Bell and "
                       "image-to-image persistence, the original model included; with --attacks (or --profile "
                       "attacks) the success rate of Ring-A-Bell's GA, UnlearnDiffAtk, P4D and concept inversion "
                       "too. Every rate is written rate% [95 % Wilson interval] (k/n). Writes DIR/bench.json, "
                       "DIR/bench.md and DIR/report.html.")
    add_model(p, " (a ShapeWorld-vocabulary model)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="main",
                   help="which rows: main (the README's main job, 17-23 min on 2 cores: " +
                   " ".join(PROFILES["main"]) + "; no attack columns but Ring-A-Bell's), full (also gie-fast, "
                   "sld, sld-max and forceforget, about 20 min more; `--methods forceforget` alone, the original "
                   "rows included: 11 min) or attacks (main's rows and sld-max, every attack column on 80 images "
                   "each: about 2 h on 2 cores, estimated from the attack suite's seconds); default: %(default)s")
    p.add_argument("--attacks", nargs="+", default=None, choices=list(ATTACK_COLUMNS.values()),
                   help="attack columns to measure on every row (80 images each), instead of the profile's "
                   "(attacks: all; main, full: none, their cells –)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="methods or variants instead of the profile's (uce-plain, rece-plain, trce-1-plain: the bare "
                   "concept, no preset; trce-1: TRCE's closed-form stage alone; trce: both stages; esd-x, esd-u, abo "
                   "(plain erasure), abo-alt (triangle → diamond, tobias renn → mira solberg): the methods' "
                   "ShapeWorld settings, which a call on ShapeWorld takes too (their configs' shapeworld_settings: "
                   "100 steps on x_t from 10-step trajectories, more on a style); gie: its defaults "
                   "(fixed w = -2, half of a style's shapes' span spared); gie-adapter: the shipped scale "
                   "adapter; gie-fast: one branch; sld / sld-max: presets medium / max; forceforget: 40 RL rounds "
                   "of 32 samples at lr 1e-2, its reward curve in the report)")
    p.add_argument("--concepts", nargs="+", default=list(DEFAULT_CONCEPTS), help="ShapeWorld shapes or artists")
    p.add_argument("--seeds", type=COUNT, default=4, help="images per phrasing (default 4: 20 per target form; "
                   "16 puts every column but a style's preservation on ≥ 80 images, enough to tell 5 %% from 20 "
                   "%%; 27 that one too)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--resume", action="store_true", help="reuse the rows an earlier run into DIR finished (DIR/rows/, "
                   "kept after every row) when it had the same seeds, attacks, model and row options; a long run "
                   "such as --profile attacks continues where it stopped")
    p.set_defaults(run=run_bench)
    r = sub.add_parser("report", help="render a bench folder's report.html again",
                       description="Re-render DIR/report.html from DIR/bench.json and its image grids.")
    r.add_argument("folder", metavar="DIR")
    r.add_argument("--model", default=None, help="unused; accepted like everywhere")
    r.set_defaults(run=run_report)


def run_bench(args) -> int:
    import time
    from ..bench import PROFILES, VARIANTS, markdown, run_bench as bench
    from ..bench.table import ATTACK_COLUMNS
    from ..errors import ErasekitError
    from ..methods import METHODS
    from ..shapeworld.domain import find_concept
    methods = args.methods or list(PROFILES[args.profile])
    unknown = [m for m in methods if m not in METHODS and m not in VARIANTS]
    if unknown:
        raise ErasekitError(f"unknown method(s) {unknown}; available: {', '.join(sorted({*METHODS, *VARIANTS}))}")
    for concept in args.concepts:
        try:
            attribute, _ = find_concept(concept)
        except KeyError:
            raise ErasekitError(f"{concept!r} is not a ShapeWorld concept") from None
        if attribute not in ("shape", "texture"):
            raise ErasekitError(f"bench concepts are shapes or artists/textures, not a {attribute}")
    start = time.perf_counter()
    attacks = args.attacks if args.attacks is not None else (
        list(ATTACK_COLUMNS.values()) if args.profile == "attacks" else [])
    rows = bench(methods, args.concepts, args.out, args.seeds, args.model, attacks=attacks, resume=args.resume)
    print(markdown(rows))
    print(f"bench took {(time.perf_counter() - start) / 60:.1f} min; wrote {args.out}/bench.json, bench.md, "
          "report.html")
    return 0


def run_report(args) -> int:
    from pathlib import Path
    from ..errors import ErasekitError
    from ..bench import write_report
    if not (Path(args.folder) / "bench.json").exists():
        raise ErasekitError(f"{args.folder} has no bench.json (run 'erasekit bench --out {args.folder}' first)")
    print(f"wrote {write_report(args.folder)}")
    return 0
