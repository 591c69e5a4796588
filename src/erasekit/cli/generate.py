"""`erasekit generate`: images for one prompt, optionally with Edits applied, plus a grid."""
from __future__ import annotations

from pathlib import Path

from ..errors import ErasekitError
from .options import COUNT, GUIDANCE, SEED, STEPS, add_edits, add_model, number

MAX_IMAGES = 10_000


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate images for a prompt (with edits applied, if given)",
                       description="Generate --num-images images for --prompt, image i with seed SEED+i, and write "
                       "DIR/images/NNNN.png, DIR/grid.png and DIR/generate.json (the settings used).")
    add_model(p)
    add_edits(p)
    p.add_argument("--prompt", required=True, help="the text prompt")
    p.add_argument("--negative-prompt", default=None, help="text to steer away from (classifier-free guidance)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the first image; image i uses SEED+i (default 0)")
    p.add_argument("--num-images", type=number(int, 1, MAX_IMAGES), default=4, help="how many images (default 4)")
    p.add_argument("--steps", type=STEPS, default=None, help="denoising steps (default: the model's, 20)")
    p.add_argument("--guidance", type=GUIDANCE, default=None, help="classifier-free guidance scale (default: the "
                   "model's, 7.5)")
    p.add_argument("--batch-size", type=COUNT, default=64, help="images per forward batch (default 64)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created; existing images with "
                   "the same names are replaced)")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..edits import load_edit
    from ..models import load_pipeline
    from ..sampling import generate, sampler_defaults
    from ..utils.files import atomic_write_json, grid, save_image

    if not args.prompt.strip():
        raise ErasekitError("--prompt is empty")
    edits = [load_edit(path) for path in args.edit]  # fail on a bad edit before any work or any file
    pipe = load_pipeline(args.model)
    for edit in edits:
        edit.apply(pipe)
    seeds = list(range(args.seed, args.seed + args.num_images))
    images = generate(pipe, args.prompt, seeds, steps=args.steps, guidance=args.guidance,
                      negative_prompt=args.negative_prompt, batch_size=args.batch_size)
    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for seed, image in zip(seeds, images):
        save_image(image, out / "images" / f"{seed:04d}.png")
    save_image(grid(images, scale=max(1, 128 // images[0].size[0])), out / "grid.png")
    steps, guidance = sampler_defaults(pipe)
    atomic_write_json(out / "generate.json", {
        "model": getattr(pipe, "erasekit_source", args.model), "prompt": args.prompt,
        "negative_prompt": args.negative_prompt, "seeds": seeds, "steps": args.steps or steps,
        "guidance": guidance if args.guidance is None else args.guidance,
        "scheduler": type(pipe.scheduler).__name__, "edits": [e.metadata for e in edits],
    })
    print(f"wrote {len(images)} images and grid.png to {out}")
    return 0
