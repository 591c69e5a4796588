"""`erasekit erase`: run an erasure method and write the Edit folder."""
from __future__ import annotations

import math

import yaml

from ..errors import ErasekitError
from .options import COUNT, add_model


def add_parser(sub) -> None:
    from ..methods import METHODS
    methods = ", ".join(f"{m.name} ({m.summary})" for m in METHODS.values())
    p = sub.add_parser("erase", help="erase concepts from a model and write an Edit folder",
                       description=f"Erase concepts and write DIR/edit.json + DIR/tensors.safetensors. Methods: "
                       f"{methods}. Apply the result with 'erasekit generate --edit DIR'. The fine-tuning methods "
                       "take the training options steps, lr, batch_size, accumulation, seed, lora_rank, trainable, "
                       "sample_steps, step_window (e.g. [0.5,1]: x_t from the last half of the steps), pool_seeds "
                       "(trajectories per prompt sampled once and reused), loss_weighting (none, guidance), "
                       "lam_preserve with preserve_latents (target, own: where the preserved prompts are held) and "
                       "preserve_pool_seeds (own: trajectories pooled per preserved prompt), "
                       "work_dir (checkpoints; a run found there resumes). Their defaults are the authors' (SD on "
                       "GPUs); on ShapeWorld (no --model) the options not given take erasekit's ShapeWorld settings "
                       "instead, the bench's (minutes on 2 cores; edit.json records them). Train data-parallel with "
                       "'torchrun --nproc_per_node N -m erasekit.cli.main erase ...' (CPU) or 'accelerate launch "
                       "--num_processes N -m erasekit.cli.main erase ...' (GPUs).")
    add_model(p)
    p.add_argument("--method", required=True, choices=sorted(METHODS), help="the erasure method")
    p.add_argument("--concept", action="append", default=[], metavar="C",
                   help="a concept to erase (repeat for several), or a preset: nudity, unsafe, artists, objects, "
                   "shapeworld/<concept> (e.g. shapeworld/triangle, 'shapeworld/tobias renn')")
    p.add_argument("--anchor", default=None, help="what the concept becomes ('' = unconditional; default: the "
                   "preset's, else '')")
    p.add_argument("--preserve", nargs="*", default=None, metavar="P", help="concepts to keep unchanged")
    p.add_argument("--keep", nargs="*", default=None, metavar="K", help="what the concept's prompts draw beside "
                   "it that must stay, e.g. a style's subjects (GIE spares part of their directions; default: the "
                   "preset's: ShapeWorld's styles keep the shapes)")
    p.add_argument("--spec", default=None, metavar="FILE", help="a YAML/JSON concept spec (targets, anchor, "
                   "preserve, templates, pairs, keep)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. lam=0.1 or epochs=2 (see the method's config)")
    p.add_argument("--out", required=True, metavar="DIR", help="the Edit folder to write (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--lora", default=None, metavar="FILE", help="also write a LoRA .safetensors file that plain "
                   "diffusers loads with pipe.load_lora_weights(FILE)")
    p.add_argument("--lora-rank", type=COUNT, default=None, help="cap the LoRA rank (the error is reported)")
    p.set_defaults(run=run)


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise ErasekitError(f"--option {pair!r}: expected KEY=VALUE")
        key, text = pair.split("=", 1)
        value = yaml.safe_load(text)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as text: take what Python reads as a number as one
            try:
                value = float(text)
            except ValueError:
                pass
        if isinstance(value, float) and not math.isfinite(value):
            raise ErasekitError(f"--option {pair!r}: expected a finite number")
        options[key.strip().replace("-", "_")] = value
    return options


def run(args) -> int:
    from pathlib import Path

    from ..concepts import resolve
    from ..methods import erase, make_config
    from ..models import load_pipeline

    if not args.concept and not args.spec:
        raise ErasekitError("give at least one --concept or a --spec file")
    if Path(args.out).exists() and not args.overwrite:
        raise ErasekitError(f"{args.out} already exists; choose another folder or pass --overwrite")
    options = parse_options(args.option)
    make_config(args.method, **options)  # unknown options fail before the model loads
    spec = resolve(args.concept or None, anchor=args.anchor, preserve=args.preserve, spec_file=args.spec,
                   keep=args.keep)
    pipe = load_pipeline(args.model)
    edit = erase(pipe, args.method, spec, **options)
    from ..utils.processes import process_state
    if not process_state().is_main_process:  # data-parallel training: every process holds the same edit
        return 0
    if args.lora and edit.kind != "weight_delta":  # refused before anything is written
        raise ErasekitError(f"--lora: {args.method} makes an {edit.kind} edit, which acts at sampling time; only "
                            "weight-delta edits can be exported as LoRA")
    edit.save(args.out, overwrite=args.overwrite)
    print(f"wrote {edit} to {args.out} in {edit.metadata['protocol']['seconds_erase']:.2f} s")
    if edit.metadata["protocol"].get("rewards"):
        from ..methods.forceforget import save_reward_curve
        print(f"wrote the reward curve {save_reward_curve(edit, Path(args.out) / 'reward_curve.png')}")
    if args.lora:
        report = edit.export_lora(args.lora, max_rank=args.lora_rank)
        print(f"wrote LoRA {args.lora}: ranks {report['ranks']}, max relative error "
              f"{report['max_relative_error']:.2e}")
    return 0
