"""Train ShapeWorld's classifier on erasekit's training loop (`erasekit.training.train`): AdamW, a linear warm-up
over the first tenth of the steps then cosine to zero, each step's batch and augmentation drawn from (seed, step),
BatchNorm statistics checkpointed with the weights. With `--checkpoints DIR` the run checkpoints, logs its loss
and resumes there bit-identically.

    python -m erasekit.shapeworld.classifier --data runs/shapeworld/data.npz --vae runs/shapeworld/vae_trained \
        --out src/erasekit/shapeworld/weights/classifier
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...training import TrainingConfig, derived_seed, train as train_loop
from ...utils.images import to_signed
from . import CLASSIFIER_DIR, ShapeWorldClassifier, evaluate, held_out, loss_and_accuracy


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Degradations generated images show: larger or smaller objects, blotchy backgrounds, noise, blur, colour,
    contrast and brightness shifts, small shifts."""
    n = len(x)
    u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
    zoom = 0.8 + 0.55 * u(n)  # generated objects often fill more of the frame than rendered ones
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = (u(n, 2) - 0.5) * 0.25
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = u(n, 1, 1, 1) * 0.7 * (u(n, 1, 1, 1) < 0.5)
    x = x * (1 - mix) + blur * mix
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + (x - mean) * (0.7 + 0.6 * u(n, 1, 1, 1))  # contrast
    gray = x.mean(dim=1, keepdim=True)
    x = gray + (x - gray) * (0.6 + 0.8 * u(n, 1, 1, 1))  # saturation
    x = x * (1 + (u(n, 1, 1, 1) - 0.5) * 0.3) + (u(n, 3, 1, 1) - 0.5) * 0.15
    blotches = F.interpolate(torch.randn(n, 3, 4, 4, generator=g), size=x.shape[-2:], mode="bilinear")
    x = x + blotches * u(n, 1, 1, 1) * 0.08
    x = x + torch.randn(x.shape, generator=g) * u(n, 1, 1, 1) * 0.1
    return x.clamp(0, 1)


@torch.no_grad()
def vae_roundtrip(images: np.ndarray, vae_dir: str) -> np.ndarray:
    """Images passed through the pipeline's VAE: the blur and colour error of generated images, for training."""
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    out = []
    for i in tqdm(range(0, len(images), 500), desc="vae round trip"):
        y = vae.decode(vae.encode(to_signed(images[i:i + 500])).latent_dist.mean).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def train(images: np.ndarray, labels: np.ndarray, steps: int, batch: int, seed: int, lr: float = 2e-3,
          width: int = 24, folder: str | Path | None = None, checkpoint_every: int = 250,
          progress: bool = True) -> ShapeWorldClassifier:
    """A classifier trained on uint8 images (N, H, W, 3) and their label rows; with `folder`, checkpointed there
    every `checkpoint_every` steps and resumed from it."""
    torch.manual_seed(derived_seed(seed, "classifier", "init"))
    model = ShapeWorldClassifier(width)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    shown = {}

    def loss_fn(ctx):
        idx = torch.randint(len(x_all), (batch,), generator=ctx.generator)
        x = augment(x_all[idx].permute(0, 3, 1, 2).float() / 255, ctx.generator)
        loss, accuracy = loss_and_accuracy(model(x), y_all[idx])
        shown.update({a[:3]: f"{v:.2f}" for a, v in accuracy.items()})
        return loss
    settings = TrainingConfig(steps=steps, lr=lr, optimizer="adamw", weight_decay=1e-4, schedule="cosine",
                              warmup=steps // 10, grad_clip=0.0, seed=seed, checkpoint_every=checkpoint_every,
                              log_every=20)
    model.train()
    train_loop(loss_fn, dict(model.named_parameters()), settings, buffers=dict(model.named_buffers()),
               folder=folder, record={"classifier": {"batch": batch, "width": width, "images": len(images)}},
               desc="train classifier", progress=progress, status=lambda: shown)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m erasekit.shapeworld.classifier", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data.npz written by erasekit.shapeworld.train")
    parser.add_argument("--vae", help="a VAE folder: some training images are also passed through it")
    parser.add_argument("--vae-images", type=int, default=6000, help="how many (default 6000)")
    parser.add_argument("--out", default=str(CLASSIFIER_DIR))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoints", help="folder for checkpoints and the loss log; a run found there resumes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads for training (default: all cores)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    data = np.load(args.data)
    images, labels = data["images"], data["labels"]
    if args.vae:
        n = min(args.vae_images, len(images))
        images = np.concatenate([images, vae_roundtrip(images[:n], args.vae)])
        labels = np.concatenate([labels, labels[:n]])
    model = train(images, labels, args.steps, args.batch, args.seed, folder=args.checkpoints)
    model.save(args.out)
    test_images, test_labels = held_out(3000, seed=args.seed + 777_777)
    accuracy = evaluate(model, test_images, test_labels)
    print("held-out procedural accuracy: " + ", ".join(f"{a} {100 * v:.2f}%" for a, v in accuracy.items()))
    print(f"classifier written to {args.out} in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
