"""ShapeWorld's concept classifier: a small CNN with one head per attribute (shape incl. "no object", colour,
texture, background). It is erasekit's stand-in for NudeNet and style/object classifiers.

    python -m erasekit.shapeworld.classifier --data runs/shapeworld/data.npz --vae runs/shapeworld/vae_trained \
        --out src/erasekit/shapeworld/weights/classifier
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..utils.images import to_signed, to_unit
from .domain import LABELS, NO_OBJECT

CLASSIFIER_DIR = Path(__file__).resolve().parent / "weights" / "classifier"
# Colour and texture are undefined when there is no object; their losses and accuracies skip those images.
NEEDS_OBJECT = ("color", "texture")


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.SiLU())


class ShapeWorldClassifier(nn.Module):
    """Input: images as float (N, 3, H, W) in [0, 1]. Output: logits per attribute."""

    def __init__(self, width: int = 24):
        super().__init__()
        self.features = nn.Sequential(_block(3, width), nn.MaxPool2d(2), _block(width, 2 * width), nn.MaxPool2d(2),
                                      _block(2 * width, 4 * width))
        self.heads = nn.ModuleDict({a: nn.Linear(8 * width, len(v)) for a, v in LABELS.items()})
        self.width = width

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (mean and max), also used as the feature network for Fréchet distance."""
        h = self.features(images * 2 - 1)
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.embed(images)
        return {a: head(h) for a, head in self.heads.items()}

    @torch.no_grad()
    def probabilities(self, images) -> dict[str, torch.Tensor]:
        """Per-attribute class probabilities for PIL images, uint8 arrays (N,H,W,3) or float tensors in [0, 1]."""
        self.eval()
        return {a: logits.softmax(-1) for a, logits in self(to_unit(images)).items()}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps({"width": self.width, "labels": LABELS}, indent=2))

    @classmethod
    def load(cls, folder: str | Path = CLASSIFIER_DIR) -> "ShapeWorldClassifier":
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text())
        if {a: tuple(v) for a, v in config["labels"].items()} != LABELS:
            raise ValueError(f"{folder}: classifier labels do not match this ShapeWorld vocabulary")
        model = cls(config["width"])
        model.load_state_dict(load_file(folder / "model.safetensors"))
        return model.eval()


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


def loss_and_accuracy(logits: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    has_object = labels[:, 0] != LABELS["shape"].index(NO_OBJECT)
    total, accuracy = 0.0, {}
    for k, attribute in enumerate(LABELS):
        keep = has_object if attribute in NEEDS_OBJECT else torch.ones_like(has_object)
        if keep.any():
            total = total + F.cross_entropy(logits[attribute][keep], labels[keep, k])
            accuracy[attribute] = (logits[attribute][keep].argmax(-1) == labels[keep, k]).float().mean().item()
    return total, accuracy


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
          width: int = 24) -> ShapeWorldClassifier:
    torch.manual_seed(seed)
    model = ShapeWorldClassifier(width)
    opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    bar = tqdm(range(steps), desc="train classifier")
    for step in bar:
        idx = torch.randint(len(x_all), (batch,), generator=g)
        x = augment(x_all[idx].permute(0, 3, 1, 2).float() / 255, g)
        loss, accuracy = loss_and_accuracy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", **{a[:3]: f"{v:.2f}" for a, v in accuracy.items()})
    return model.eval()


@torch.no_grad()
def evaluate(model: ShapeWorldClassifier, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    logits = {a: [] for a in LABELS}
    for i in range(0, len(images), 500):
        for a, v in model(to_unit(images[i:i + 500])).items():
            logits[a].append(v)
    return loss_and_accuracy({a: torch.cat(v) for a, v in logits.items()}, torch.from_numpy(labels))[1]


def held_out(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Procedural images from a seed disjoint from the training data's."""
    from .render import scene_images
    scenes, images = scene_images(n, seed)
    return images, np.array([list(scene.labels().values()) for scene in scenes], np.int64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data.npz written by erasekit.shapeworld.train")
    parser.add_argument("--vae", help="a VAE folder: some training images are also passed through it")
    parser.add_argument("--vae-images", type=int, default=6000, help="how many (default 6000)")
    parser.add_argument("--out", default=str(CLASSIFIER_DIR))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    data = np.load(args.data)
    images, labels = data["images"], data["labels"]
    if args.vae:
        n = min(args.vae_images, len(images))
        images = np.concatenate([images, vae_roundtrip(images[:n], args.vae)])
        labels = np.concatenate([labels, labels[:n]])
    model = train(images, labels, args.steps, args.batch, args.seed)
    model.save(args.out)
    test_images, test_labels = held_out(3000, seed=args.seed + 777_777)
    accuracy = evaluate(model, test_images, test_labels)
    print("held-out procedural accuracy: " + ", ".join(f"{a} {100 * v:.2f}%" for a, v in accuracy.items()))
    print(f"classifier written to {args.out} in {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
