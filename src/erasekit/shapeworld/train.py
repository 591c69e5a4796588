"""Train ShapeWorld's pipeline from a seed: data → VAE → latents → UNet + text encoder → diffusers folder.

    python -m erasekit.shapeworld.train --out runs/shapeworld --seed 0

Every stage writes its result to `--out` and is skipped when that result exists. The VAE and the denoiser train on
erasekit's one training loop (`erasekit.training.train`): each checkpoints into `OUT/vae/` and `OUT/denoiser/` every
`--checkpoint-every` steps (one atomic set), logs its loss to `log.csv` there, and resumes from its last
checkpoint. Each step's randomness is derived from (seed, stage, step), so a resumed run continues bit-identically.
The denoiser's EMA is diffusers' `EMAModel` and its min-SNR weighting diffusers' `compute_snr` (through
`erasekit.training.denoising_loss`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm.auto import tqdm

from . import components
from .captions import caption
from .domain import LABELS, Scene
from .render import render, sample_scene
from ..models.loading import DEFAULTS_FILE
from ..models.text import first_eot_index
from ..training import TrainingConfig, TrainingError, denoising_loss, derived_seed, train
from ..training.checkpoint import load as load_checkpoint
from ..utils.files import atomic_dir, atomic_save_tensors
from ..utils.images import to_signed
from .tokenizer import save_tokenizer


@dataclass
class TrainConfig:
    out: str
    seed: int = 0
    num_images: int = 40000
    vae_steps: int = 2000
    vae_batch: int = 32
    vae_lr: float = 1e-3
    steps: int = 4000
    batch: int = 64
    lr: float = 6e-4
    warmup: int = 200
    ema_decay: float = 0.999
    p_uncond: float = 0.1
    aux_weight: float = 0.1  # attribute loss on the EoT embedding: gives it CLIP-like prompt semantics
    min_snr_gamma: float = 5.0
    prediction: str = components.PREDICTION  # one of components.PREDICTIONS
    checkpoint_every: int = 250

    def __post_init__(self):
        if self.prediction not in components.PREDICTIONS:
            raise ValueError(f"prediction must be one of {components.PREDICTIONS}, not {self.prediction!r}")

    def record(self, *fields: str) -> dict:
        """The settings a stage's checkpoints are bound to beyond its TrainingConfig (a resume must match them)."""
        return {"shapeworld": {f: getattr(self, f) for f in ("seed", "num_images", *fields)}}


def make_dataset(cfg: TrainConfig, path: Path) -> None:
    rng = np.random.default_rng(cfg.seed)
    images = np.empty((cfg.num_images, 32, 32, 3), np.uint8)
    labels = np.empty((cfg.num_images, len(LABELS)), np.int64)
    for i in tqdm(range(cfg.num_images), desc="render dataset"):
        scene = sample_scene(rng)
        images[i] = render(scene, rng)
        labels[i] = list(scene.labels().values())
    np.savez(path.with_suffix(".tmp.npz"), images=images, labels=labels)
    os.replace(path.with_suffix(".tmp.npz"), path)


def seeded(cfg: TrainConfig, stage: str) -> int:
    """Seed a stage's initial weights (a resumed run overwrites them from its checkpoint); the stage's own seed
    for the training loop, from which every step's randomness is derived."""
    torch.manual_seed(derived_seed(cfg.seed, stage, "init"))
    return derived_seed(cfg.seed, stage)


def named_parameters(**modules: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {f"{name}.{n}": p for name, module in modules.items() for n, p in module.named_parameters()}


def save_model(model, folder: Path) -> None:
    """save_pretrained as one atomic set: a stage whose folder exists is finished (a later run skips it)."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)


def train_vae(cfg: TrainConfig, images: np.ndarray, out: Path, progress: bool = True) -> None:
    seed = seeded(cfg, "vae")
    vae = components.vae()
    shown = {}

    def loss_fn(ctx):
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=ctx.generator)
        x = to_signed(images[idx.numpy()])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=ctx.generator)).sample
        l1 = (recon - x).abs().mean()
        kl = posterior.kl().mean() / x[0].numel()
        shown.update(l1=f"{l1.item():.4f}", kl=f"{kl.item():.3g}")
        return l1 + F.mse_loss(recon, x) + 1e-4 * kl
    settings = TrainingConfig(steps=cfg.vae_steps, lr=cfg.vae_lr, optimizer="adamw", grad_clip=0.0, seed=seed,
                              checkpoint_every=cfg.checkpoint_every, log_every=25)
    train(loss_fn, named_parameters(vae=vae), settings, folder=out / "vae", record=cfg.record("vae_batch"),
          desc="train vae", progress=progress, status=lambda: shown)
    save_model(vae, out / "vae_trained")


@torch.no_grad()
def encode_latents(images: np.ndarray, vae_dir: Path, out: Path) -> None:
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    means, stds = [], []
    for i in tqdm(range(0, len(images), 500), desc="encode latents"):
        dist = vae.encode(to_signed(images[i:i + 500])).latent_dist
        means.append(dist.mean.half())
        stds.append(dist.std.half())
    mean = torch.cat(means)
    scale = 1.0 / mean.float().std().item()
    atomic_save_tensors({"mean": mean, "std": torch.cat(stds), "scale": torch.tensor(scale)}, out)


def caption_batch(labels: np.ndarray, rng: random.Random, p_uncond: float) -> tuple[list[str], torch.Tensor]:
    """Captions for a batch of label rows, and a mask of which attributes each caption supervises."""
    texts, mask = [], torch.zeros(len(labels), len(LABELS))
    for i, row in enumerate(labels):
        if rng.random() < p_uncond:
            texts.append("")
            continue
        scene = Scene(*(LABELS[a][k] for a, k in zip(LABELS, row)))
        text, mentioned = caption(scene, rng)
        texts.append(text)
        mask[i] = torch.tensor([a in mentioned for a in LABELS], dtype=torch.float)
    return texts, mask


def eot_hidden(hidden: torch.Tensor, input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    return hidden[torch.arange(len(hidden)), first_eot_index(input_ids, eos_id)]


def attribute_loss(aux: torch.nn.Linear, eot: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each attribute the caption names, predicted from the EoT embedding."""
    logits = aux(eot).split([len(v) for v in LABELS.values()], 1)
    return sum((F.cross_entropy(lg, labels[:, k], reduction="none") * mask[:, k]).mean()
               for k, lg in enumerate(logits))


DENOISER_FIELDS = ("batch", "p_uncond", "aux_weight", "min_snr_gamma", "prediction")


def denoiser_models(tokenizer):
    return components.text_encoder(tokenizer), components.unet()


def train_denoiser(cfg: TrainConfig, labels: np.ndarray, latents: dict, out: Path, progress: bool = True) -> None:
    tokenizer = save_tokenizer(out / "tokenizer")
    seed = seeded(cfg, "denoiser")
    text_encoder, unet = denoiser_models(tokenizer)
    aux = torch.nn.Linear(components.TEXT_DIM, sum(len(v) for v in LABELS.values()))
    scheduler = components.train_scheduler(cfg.prediction)
    mean, std, scale = latents["mean"], latents["std"], latents["scale"].item()
    shown = {}

    def loss_fn(ctx):
        g = ctx.generator
        idx = torch.randint(len(labels), (cfg.batch,), generator=g)
        texts, mask = caption_batch(labels[idx.numpy()], random.Random(derived_seed(ctx.seed, "captions")),
                                    cfg.p_uncond)
        z0 = (mean[idx].float() + std[idx].float() * torch.randn(mean[idx].shape, generator=g)) * scale
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        hidden = text_encoder(ids).last_hidden_state
        pred = unet(scheduler.add_noise(z0, noise, t), t, hidden).sample
        loss = denoising_loss(pred, scheduler, z0, noise, t, min_snr_gamma=cfg.min_snr_gamma)
        aux_loss = attribute_loss(aux, eot_hidden(hidden, ids, tokenizer.eos_token_id),
                                  torch.from_numpy(labels[idx.numpy()]), mask)
        shown.update(denoise=f"{loss.item():.4f}", aux=f"{aux_loss.item():.3f}")
        return loss + cfg.aux_weight * aux_loss
    # Linear warm-up, then cosine to a tenth of the peak; clipped at norm 1; EMA of every weight.
    settings = TrainingConfig(steps=cfg.steps, lr=cfg.lr, optimizer="adamw", weight_decay=1e-2, schedule="cosine",
                              warmup=cfg.warmup, lr_floor=0.1, grad_clip=1.0, seed=seed,
                              checkpoint_every=cfg.checkpoint_every, log_every=25)
    train(loss_fn, named_parameters(unet=unet, text_encoder=text_encoder, aux=aux), settings,
          folder=out / "denoiser", record=cfg.record(*DENOISER_FIELDS), ema_decay=cfg.ema_decay,
          desc="train unet+text", progress=progress, status=lambda: shown)
    save_model(text_encoder, out / "text_encoder_trained")
    save_model(unet, out / "unet_trained")  # last: its folder marks the stage finished


def checkpoint_models(out: Path):
    """The EMA UNet and text encoder of the latest denoiser checkpoint (for exporting a run in progress)."""
    from transformers import CLIPTokenizer
    found = load_checkpoint(out / "denoiser" / "checkpoint", None)
    if found is None or found.ema is None:
        raise TrainingError(f"{out / 'denoiser'} holds no checkpoint with EMA weights to export")
    text_encoder, unet = denoiser_models(CLIPTokenizer.from_pretrained(out / "tokenizer"))
    with torch.no_grad():
        for name, p in named_parameters(unet=unet, text_encoder=text_encoder).items():
            p.copy_(found.ema[name])
    return unet, text_encoder, found.step


def export(out: Path, dest: Path, scale: float, from_checkpoint: bool = False) -> None:
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    train_config = json.loads((out / "config.json").read_text())
    vae = AutoencoderKL.from_pretrained(out / "vae_trained")
    vae.register_to_config(scaling_factor=scale)
    if from_checkpoint:
        unet, text_encoder, step = checkpoint_models(out)
    else:
        unet = UNet2DConditionModel.from_pretrained(out / "unet_trained")
        text_encoder = CLIPTextModel.from_pretrained(out / "text_encoder_trained")
        step = train_config["steps"]
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"), unet=unet,
        scheduler=components.sample_scheduler(train_config.get("prediction", "epsilon")), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(dest, safe_serialization=True)
    card = {"steps": components.DEFAULT_STEPS, "guidance": components.DEFAULT_GUIDANCE, "denoiser_steps": step,
            "trained_by": "python -m erasekit.shapeworld.train",
            "train_config": train_config}
    (Path(dest) / DEFAULTS_FILE).write_text(json.dumps(card, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="working folder (data, checkpoints, logs)")
    parser.add_argument("--export", help="where to write the final pipeline folder (default: OUT/pipeline)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads for training (default: all cores)")
    parser.add_argument("--from-checkpoint", action="store_true",
                        help="only export the EMA weights of the latest checkpoint of a run still in progress")
    for field, default in asdict(TrainConfig(out="")).items():
        if field != "out":
            choices = components.PREDICTIONS if field == "prediction" else None
            parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default, choices=choices)
    args = vars(parser.parse_args(argv))
    dest = Path(args.pop("export") or Path(args["out"]) / "pipeline")
    from_checkpoint = args.pop("from_checkpoint")
    threads = args.pop("threads")
    cfg = TrainConfig(**args)
    out = Path(cfg.out)
    if from_checkpoint:
        export(out, dest, load_file(out / "latents.safetensors")["scale"].item(), from_checkpoint=True)
        print(f"pipeline of checkpoint written to {dest}")
        return
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    t0 = time.time()
    data = out / "data.npz"
    if not data.exists():
        make_dataset(cfg, data)
    arrays = np.load(data)
    images, labels = arrays["images"], arrays["labels"]
    if not (out / "vae_trained").exists():
        train_vae(cfg, images, out)
    latents_path = out / "latents.safetensors"
    if not latents_path.exists():
        encode_latents(images, out / "vae_trained", latents_path)
    latents = load_file(latents_path)
    if not (out / "unet_trained").exists():
        train_denoiser(cfg, labels, latents, out)
    export(out, dest, latents["scale"].item())
    seconds = time.time() - t0
    (out / "summary.json").write_text(json.dumps({"wall_seconds_this_run": round(seconds, 1)}, indent=2))
    print(f"pipeline written to {dest}; this run took {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
