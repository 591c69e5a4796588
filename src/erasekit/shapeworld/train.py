"""Train ShapeWorld's pipeline from a seed: data → VAE → latents → UNet + text encoder → diffusers folder.

    python -m erasekit.shapeworld.train --out runs/shapeworld --seed 0

Every stage writes its result to `--out` and is skipped when that result exists; the long stages checkpoint every
`--checkpoint-every` steps and resume from the last checkpoint. Randomness per step is derived from (seed, step),
so a resumed run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import components
from .captions import caption
from .domain import LABELS, Scene
from .render import render, sample_scene
from ..models.loading import DEFAULTS_FILE
from ..models.text import first_eot_index
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


def step_seed(seed: int, stage: int, step: int) -> int:
    return (seed * 1_000_003 + stage * 10_007 + step) % 2**31


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


class Checkpoint:
    """Model weights as safetensors plus optimizer state and step, written as one atomic set (a folder renamed
    into place): a crash can never pair new weights with an old step."""

    def __init__(self, folder: Path):
        self.folder = folder

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> None:
        with atomic_dir(self.folder) as tmp:
            for name, module in modules.items():
                save_file({k: v.contiguous() for k, v in module.state_dict().items()}, tmp / f"{name}.safetensors")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            (tmp / "step.json").write_text(json.dumps({"step": step}))

    def load(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> int:
        if not (self.folder / "step.json").exists():
            return 0
        for name, module in modules.items():
            module.load_state_dict(load_file(self.folder / f"{name}.safetensors"))
        optimizer.load_state_dict(torch.load(self.folder / "optimizer.pt", weights_only=True))
        return json.loads((self.folder / "step.json").read_text())["step"]


class Log:
    def __init__(self, path: Path, fields: list[str]):
        self.path, self.fields = path, fields
        if not path.exists():
            path.write_text(",".join(fields) + "\n")

    def write(self, **row) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)


def seeded(cfg: TrainConfig, stage: int) -> None:
    """Seed the initial weights of a stage's models (a resumed run overwrites them from its checkpoint)."""
    torch.manual_seed(step_seed(cfg.seed, stage, 0))


def train_vae(cfg: TrainConfig, images: np.ndarray, out: Path) -> None:
    seeded(cfg, 4)
    vae = components.vae()
    opt = torch.optim.AdamW(vae.parameters(), cfg.vae_lr, weight_decay=0.0)
    ckpt = Checkpoint(out / "ckpt_vae")
    start = ckpt.load({"vae": vae}, opt)
    log = Log(out / "vae_log.csv", ["step", "l1", "kl", "seconds"])
    t0 = time.time()
    bar = tqdm(range(start, cfg.vae_steps), desc="train vae", initial=start, total=cfg.vae_steps)
    for step in bar:
        g = torch.Generator().manual_seed(step_seed(cfg.seed, 1, step))
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=g)
        x = to_signed(images[idx.numpy()])
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
        recon = vae.decode(z).sample
        l1 = (recon - x).abs().mean()
        kl = posterior.kl().mean() / x[0].numel()
        loss = l1 + F.mse_loss(recon, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(l1=f"{l1.item():.4f}")
        if (step + 1) % 25 == 0:
            log.write(step=step + 1, l1=l1.item(), kl=kl.item(), seconds=round(time.time() - t0, 1))
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps:
            ckpt.save(step + 1, {"vae": vae}, opt)
    vae.save_pretrained(out / "vae_trained", safe_serialization=True)


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


class EMA:
    def __init__(self, modules: list[torch.nn.Module], decay: float):
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # warm-up: early weights are not averaged in for long
        for s, p in zip(self.shadow, self.params):
            s.lerp_(p, 1 - decay)

    def state_module(self) -> torch.nn.Module:
        holder = torch.nn.Module()
        holder.shadow = torch.nn.ParameterList([torch.nn.Parameter(s, requires_grad=False) for s in self.shadow])
        return holder

    @torch.no_grad()
    def copy_to_model(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)


def target(scheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    return scheduler.get_velocity(z0, noise, t) if cfg.prediction == "v_prediction" else noise


def min_snr_weight(snr: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Min-SNR-γ: the x0-error weight min(SNR, γ), expressed for the model's target (Hang et al. 2023)."""
    return snr.clamp(max=cfg.min_snr_gamma) / (snr + 1 if cfg.prediction == "v_prediction" else snr)


def train_denoiser(cfg: TrainConfig, labels: np.ndarray, latents: dict, out: Path) -> None:
    tokenizer = save_tokenizer(out / "tokenizer")
    seeded(cfg, 5)
    text_encoder, unet = components.text_encoder(tokenizer), components.unet()
    aux = torch.nn.Linear(components.TEXT_DIM, sum(len(v) for v in LABELS.values()))
    scheduler = components.train_scheduler(cfg.prediction)
    params = [*unet.parameters(), *text_encoder.parameters(), *aux.parameters()]
    opt = torch.optim.AdamW(params, cfg.lr, weight_decay=1e-2)
    ema = EMA([unet, text_encoder], cfg.ema_decay)
    modules = {"unet": unet, "text_encoder": text_encoder, "aux": aux}
    ckpt = Checkpoint(out / "ckpt_denoiser")
    start = ckpt.load({**modules, "ema": ema.state_module()}, opt)
    log = Log(out / "log.csv", ["step", "loss", "aux", "lr", "seconds"])
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    mean, std, scale = latents["mean"], latents["std"], latents["scale"].item()
    t0 = time.time()
    bar = tqdm(range(start, cfg.steps), desc="train unet+text", initial=start, total=cfg.steps)
    for step in bar:
        g = torch.Generator().manual_seed(step_seed(cfg.seed, 2, step))
        idx = torch.randint(len(labels), (cfg.batch,), generator=g)
        texts, mask = caption_batch(labels[idx.numpy()], random.Random(step_seed(cfg.seed, 3, step)), cfg.p_uncond)
        z0 = (mean[idx].float() + std[idx].float() * torch.randn(mean[idx].shape, generator=g)) * scale
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        hidden = text_encoder(ids).last_hidden_state
        pred = unet(scheduler.add_noise(z0, noise, t), t, hidden).sample
        error = (pred - target(scheduler, z0, noise, t, cfg)).pow(2).mean(dim=(1, 2, 3))
        loss = (min_snr_weight(snr[t], cfg) * error).mean()
        logits = aux(eot_hidden(hidden, ids, tokenizer.eos_token_id)).split([len(v) for v in LABELS.values()], 1)
        targets = torch.from_numpy(labels[idx.numpy()])
        aux_loss = sum((F.cross_entropy(lg, targets[:, k], reduction="none") * mask[:, k]).mean()
                       for k, lg in enumerate(logits))
        lr = float(cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.55 + 0.45 * np.cos(np.pi * step / cfg.steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        (loss + cfg.aux_weight * aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        bar.set_postfix(loss=f"{loss.item():.4f}", aux=f"{aux_loss.item():.3f}")
        if (step + 1) % 25 == 0:
            log.write(step=step + 1, loss=round(loss.item(), 5), aux=round(aux_loss.item(), 4), lr=f"{lr:.2e}",
                      seconds=round(time.time() - t0, 1))
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            ckpt.save(step + 1, {**modules, "ema": ema.state_module()}, opt)
    ema.copy_to_model()
    unet.save_pretrained(out / "unet_trained", safe_serialization=True)
    text_encoder.save_pretrained(out / "text_encoder_trained", safe_serialization=True)


def checkpoint_models(out: Path):
    """The EMA UNet and text encoder of the latest denoiser checkpoint (for exporting a run in progress)."""
    from transformers import CLIPTokenizer
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    text_encoder, unet = components.text_encoder(tokenizer), components.unet()
    ema = EMA([unet, text_encoder], 0.0)
    holder = ema.state_module()
    holder.load_state_dict(load_file(out / "ckpt_denoiser" / "ema.safetensors"))
    ema.shadow = list(holder.shadow)
    ema.copy_to_model()
    step = json.loads((out / "ckpt_denoiser" / "step.json").read_text())["step"]
    return unet, text_encoder, step


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
