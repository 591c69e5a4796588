"""Cost of the fine-tuning methods and of weight-delta edits on an SD1.4-shaped UNet (random weights, the true
shapes; a one-layer 768-wide text encoder): seconds per optimiser step at batch 1 and peak memory per method, and
the time to apply and remove a delta over the whole UNet.

    python scripts/bench_training.py [--threads 2] [--steps 3] [--methods esd-x abo trce esd-u]

x_t comes from 1-step trajectories here (k = 0: no sampling), so a step is the method's frozen predictions plus one
trained forward and backward; with S-step trajectories add on average S UNet forwards (guided) per step.
"""
import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

import erasekit
from erasekit.edits import WeightDelta
from erasekit.testing.tiny import sd14_unet_config


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def sd14_shaped_pipeline(folder: Path):
    """A StableDiffusionPipeline with SD1.4's UNet (random), SD's schedule, a small VAE with SD's 8x scale and a
    small 768-wide text encoder, saved and loaded through erasekit's loader."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    from erasekit.testing.tiny import WORDS
    from erasekit.shapeworld.tokenizer import save_tokenizer
    tokenizer = save_tokenizer(folder / "tok", words=WORDS, max_length=77)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=768,
                                        num_hidden_layers=1, num_attention_heads=12, max_position_embeddings=77,
                                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=512)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    unet = UNet2DConditionModel.from_config(sd14_unet_config())
    StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False
                            ).save_pretrained(folder / "pipe", safe_serialization=True)
    return erasekit.load_pipeline(folder / "pipe")


def time_delta(pipe) -> None:
    deltas = {f"unet.{n}": torch.full_like(p, 1e-4) for n, p in pipe.unet.named_parameters()}
    edit = WeightDelta.create(pipe, deltas, method="bench", concepts=["x"])
    params = sum(p.numel() for p in pipe.unet.parameters())
    for round_ in range(2):
        t0 = time.perf_counter()
        edit.apply(pipe)
        t1 = time.perf_counter()
        edit.remove(pipe)
        t2 = time.perf_counter()
        print(f"whole-UNet delta ({params / 1e6:.0f} M weights), round {round_ + 1}: apply {t1 - t0:.2f} s, "
              f"remove {t2 - t1:.2f} s; peak RSS {peak_gib():.1f} GiB")


def time_method(pipe, method: str, steps: int) -> None:
    import erasekit.training.loop as loop
    durations, step = [], loop._step

    def timed(*args):
        start = time.perf_counter()
        try:
            return step(*args)
        finally:
            durations.append(time.perf_counter() - start)
    loop._step = timed
    options = {"steps": steps, "sample_steps": 1, "lr": 1e-5, "anchor": "dog"}
    if method == "trce":
        options.update(lam=1e-3, cache_dir=tempfile.mkdtemp())
    if method in ("esd-x", "esd-u"):
        options.pop("anchor")
    try:
        erasekit.erase(pipe, method, ["cat"], **options)
    finally:
        loop._step = step
    trained = {"esd-x": "xattn", "esd-u": "noxattn", "abo": "xattn-kv", "trce": "selfattn-xattn-q"}[method]
    from erasekit.methods.finetune import select_parameters
    count = sum(p.numel() for p in select_parameters(pipe.unet, trained).values())
    print(f"{method:<6} trains {count / 1e6:6.1f} M weights: {statistics.median(durations):.1f} s per step "
          f"(median of {len(durations)}, batch 1); peak RSS so far {peak_gib():.1f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=["esd-x", "abo", "trce", "esd-u"],
                        help="fine-tuning methods to time (none: only the whole-UNet delta)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = sd14_shaped_pipeline(Path(tmp))
        print(f"SD1.4-shaped pipeline ready; peak RSS {peak_gib():.1f} GiB, {args.threads} threads")
        time_delta(pipe)
        for method in args.methods:
            time_method(pipe, method, args.steps)


if __name__ == "__main__":
    main()
