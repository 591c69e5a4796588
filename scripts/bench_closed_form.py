"""Speed of the closed-form methods on an SD1.4-shaped UNet (random weights, the true 32 K/V shapes), text
encoding excluded, against a straightforward per-matrix explicit-inverse loop measured in the same run.

    python scripts/bench_closed_form.py [--threads 2] [--repeats 3]
"""
import argparse
import resource
import time

import torch

from erasekit.closed_form.rows import covariance
from erasekit.closed_form.solver import solve, solve_reference
from erasekit.models import kv_weights
from erasekit.methods.rece import RECEConfig, derive_embedding, rece_updates
from erasekit.testing.tiny import sd14_unet_config
from erasekit.utils.timing import best_of

TOKENS, D_TEXT = 77, 768


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import UNet2DConditionModel
    t0 = time.perf_counter()
    unet = UNet2DConditionModel.from_config(sd14_unet_config()).eval()
    print(f"built SD1.4-shaped UNet in {time.perf_counter() - t0:.1f} s; peak RSS {peak_mib():.0f} MiB")
    weights = {n: w.float() for n, w in kv_weights(unet).items()}
    print(f"{len(weights)} K/V matrices, shapes {sorted({tuple(w.shape) for w in weights.values()})}")
    g = torch.Generator().manual_seed(0)
    emb = lambda n: torch.randn(n, D_TEXT, generator=g, dtype=torch.float64)  # noqa: E731  SD1.4-shaped rows

    target_last, anchor_last = emb(1), emb(1)                # UCE: last word token
    target_all, space_all = emb(TOKENS), emb(TOKENS)         # RECE: all rows of the concept and of " "
    uce_to_end, anchor_to_end = emb(TOKENS - 1), emb(TOKENS - 1)
    malicious, safe = emb(300), emb(300)                     # TRCE: 300 first-EoT rows
    c2 = covariance(emb(20_000))                             # TRCE prior (cached on disk in real use)
    prior = 0.01**2 / 3e4 * (30_000 * 77 / 20_000) * c2

    def uce(solver):
        return solver(weights, target_last, anchor_last, lam=0.5)

    def rece(solver):
        start = solver(weights, uce_to_end, anchor_to_end, lam=0.5)
        if solver is solve:  # erasekit's RECE epochs (low-rank Gram updates)
            return list(rece_updates(weights, start, target_all, space_all, RECEConfig(epochs=3, lam_reg=0.1)))
        total = start  # the straightforward loop: full weights, full Gram matrices, per-matrix inverses
        for _ in range(3):
            current = {n: w.double() + total[n] for n, w in weights.items()}
            derived = derive_embedding(current, weights, target_all, 0.1)
            step = solver(current, derived, space_all, preserve_cov=covariance(space_all, 0.1), lam=0.1)
            total = {n: total[n] + step[n] for n in total}
        return total

    def trce(solver):
        return solver(weights, malicious, safe, preserve_cov=prior, lam=0.0)

    bars = {"uce": 0.5, "rece (3 epochs)": 2.0, "trce stage 1 (300 pairs + prior)": 2.0}
    print(f"\n{'method':<34}{'erasekit s':>11}{'reference s':>13}{'speed-up':>10}{'bar s':>7}{'peak MiB':>10}")
    for name, run in (("uce", uce), ("rece (3 epochs)", rece), ("trce stage 1 (300 pairs + prior)", trce)):
        fast = best_of(lambda: run(solve), args.repeats)
        slow = best_of(lambda: run(solve_reference), 1)
        ok = "ok" if fast <= bars[name] else "MISS"
        print(f"{name:<34}{fast:>11.3f}{slow:>13.3f}{slow / fast:>9.1f}x{bars[name]:>6.1f} {ok:<4}{peak_mib():>7.0f}")
    print(f"\n{args.threads} threads; best of {args.repeats} (reference: 1 run); peak RSS includes the UNet itself")


if __name__ == "__main__":
    main()
