"""`erasekit purify`: All-but-One's purification of real images with an erasing edit."""
from __future__ import annotations

from pathlib import Path

from .options import GUIDANCE, STEPS, add_model


def add_parser(sub) -> None:
    p = sub.add_parser("purify", help="remove an erased concept from real images (DDIM inversion + regeneration)",
                       description="DDIM-invert each image with the original model, regenerate it from that noise "
                       "with the edit applied, and write DIR/<image name>.png and DIR/purify.json (All-but-One's "
                       "purification; works with any weight-delta edit).")
    add_model(p)
    p.add_argument("--image", action="append", required=True, metavar="IMG", help="an image file (repeat for more)")
    p.add_argument("--edit", required=True, metavar="DIR", help="the erasing Edit folder")
    p.add_argument("--prompt", default=None, help="the prompt for inversion and regeneration (default: the edit's "
                   "concepts, e.g. 'triangle')")
    p.add_argument("--steps", type=STEPS, default=None, help="DDIM steps (default: the model's)")
    p.add_argument("--guidance", type=GUIDANCE, default=None, help="regeneration guidance (default: the model's)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..edits import load_edit
    from ..methods.abo import purify
    from ..models import load_pipeline
    from ..utils.files import atomic_write_json, save_image
    from ..sampling.images import read_images
    edit = load_edit(args.edit)
    pipe = load_pipeline(args.model)
    images = read_images(args.image, pipe.unet.config.sample_size * pipe.vae_scale_factor)
    edit.apply(pipe)  # refuses an edit made for another model before any work
    edit.remove(pipe)
    purified = purify(pipe, edit, images, prompt=args.prompt, steps=args.steps, guidance=args.guidance)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for path, image in zip(args.image, purified):
        names.append(f"{Path(path).stem}.png")
        save_image(image, out / names[-1])
    atomic_write_json(out / "purify.json", {"images": dict(zip(args.image, names)), "prompt": args.prompt,
                                            "steps": args.steps, "guidance": args.guidance, "edit": edit.metadata})
    print(f"wrote {len(purified)} purified images to {out}")
    return 0
