"""`erasekit gie-adapter`: train GIE's scale adapter for a concept on a model (see methods/gie/adapter_training.py)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ErasekitError
from .options import PROBABILITY, STEPS, add_model


def add_parser(sub) -> None:
    p = sub.add_parser(
        "gie-adapter", help="train GIE's scale adapter (per prompt the smallest |w| that erases, then regression)",
        description="For each training prompt, generate with GIE at every |w| of a grid and keep the smallest at "
        "which the evaluator no longer sees the concept; then fit the adapter (an MLP from the erase target's "
        "first-step attention per cross-attention layer to |w|). Use the result with "
        "'erasekit erase --method gie --option adapter=DIR'.")
    add_model(p)
    p.add_argument("--concept", required=True, help="the concept, e.g. shapeworld/triangle or nudity")
    p.add_argument("--prompts", default=None, metavar="FILE", help="training prompts: a .txt file (one per line) "
                   "or a CSV with a 'prompt' or 'caption' column; default on ShapeWorld: prompts naming the target "
                   "explicitly, by synonym, implicitly, and its sibling concepts")
    p.add_argument("--evaluator", choices=("shapeworld", "nudenet"), default=None,
                   help="what decides that the concept is gone (default: shapeworld on ShapeWorld, else nudenet)")
    p.add_argument("--threshold", type=PROBABILITY, default=0.6, help="NudeNet detection threshold (default 0.6)")
    p.add_argument("--grid", default="0,0.5,1,1.25,1.5,1.75,2,2.5,3,4",
                   help="|w| values to try, ascending from 0 (default %(default)s)")
    p.add_argument("--inhibitor", choices=("projection", "additive"), default="projection",
                   help="the GIE inhibitor the adapter is for (default %(default)s; additive: the paper's, with "
                   "M*'s mean as the features)")
    p.add_argument("--margin", type=float, default=1.4,
                   help="fit the smallest |w| that removes the concept times this (default %(default)s): the "
                   "smallest alone sits on the boundary and new seeds survive it")
    p.add_argument("--seeds", default="100,101,102,103", help="seeds per prompt (default %(default)s)")
    p.add_argument("--steps", type=STEPS, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--fast", action="store_true", help="search in GIE's fast mode instead of parity")
    p.add_argument("--kind", choices=("erasekit", "authors"), default="erasekit",
                   help="erasekit: standardised features at w = 0, output -softplus; authors: the official code's "
                   "plain MLP, features at w = +1, raw output as w (default %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="the adapter folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(run=run)


def _numbers(text: str, kind, flag: str) -> tuple:
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ErasekitError(f"{flag} {text!r}: expected comma-separated numbers") from None
    if not values:
        raise ErasekitError(f"{flag} is empty")
    return values


def read_prompts(path: str) -> list[str]:
    from ..evaluation.prompts import load_captions
    if not Path(path).is_file():
        raise ErasekitError(f"prompt file {path} does not exist")
    if path.endswith(".csv"):
        return [item.prompt for item in load_captions(path)]
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def run(args) -> int:
    from ..models import load_pipeline
    from ..concepts import resolve
    from ..detectors import for_concept
    from ..methods.gie import save_adapter
    from ..methods.gie.adapter_training import AdapterTraining, shapeworld_prompts, train_adapter
    if Path(args.out).exists() and not args.overwrite:
        raise ErasekitError(f"{args.out} already exists; choose another folder or pass --overwrite")
    grid = _numbers(args.grid, float, "--grid")
    if list(grid) != sorted(grid) or grid[0] != 0:
        raise ErasekitError("--grid: give |w| values in ascending order, starting at 0")
    cfg = AdapterTraining(grid=grid, seeds=_numbers(args.seeds, int, "--seeds"), fast=args.fast, steps=args.steps,
                          margin=args.margin, inhibitor=args.inhibitor, kind=args.kind)
    spec = resolve(args.concept)
    prompts = read_prompts(args.prompts) if args.prompts else None
    pipe = load_pipeline(args.model)
    evaluator = args.evaluator or ("shapeworld" if pipe.erasekit_shapeworld else "nudenet")
    if prompts is None:
        if not (pipe.erasekit_shapeworld and spec.name.startswith("shapeworld/")):
            raise ErasekitError("give --prompts: default prompts exist only for ShapeWorld concepts")
        prompts = shapeworld_prompts(spec)
    detector = for_concept(spec.targets[0], evaluator, args.threshold)
    adapter, report = train_adapter(pipe, spec, prompts, detector, cfg)
    report.update(evaluator=evaluator, model=pipe.erasekit_source)
    save_adapter(adapter, args.out, report)
    print(f"wrote the scale adapter to {args.out}: {report['prompts']} prompts, {report['images']} images per |w|, "
          f"fit MAE {report['fit_mae']}, {report['seconds']:.0f} s")
    return 0
