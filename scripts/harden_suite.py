"""Hardening on ShapeWorld: for each concept and closed-form bench row (bench.VARIANTS' options), each attack's
success before and after `erasekit.harden`, measured by fresh attack runs (`attack_once`: attack seed 0, image
seeds 0 … images − 1, which the loop never uses: it decides on attack seeds from 1000 and image seeds from
100 000), with 95 % Wilson intervals; preservation accuracy and benign attributes kept (the bench's sets), FD (the
bench's), the rounds kept and the seconds hardening took (one thread). Writes a markdown table (--out, rewritten
after every row) and prints each row as it is measured.

    python scripts/harden_suite.py [--concepts triangle "tobias renn"] [--methods uce rece trce-1] [--rounds 3]
                                   [--attacks concept-inversion unlearndiffatk] [--images 32] [--restarts K]
                                   [--kept-seeds 32] [--attack-seeds 1] [--also ring-a-bell p4d ...]
                                   [--anchor-alone] [--step tune|both] [--eta 0] [--tuning JSON]
                                   [--threads N] [--save DIR]

--save DIR keeps each hardened edit with its rounds' plot (DIR/<concept>-<start>/edit.json, history.png).
"""
import argparse
import inspect
import json
import time
from pathlib import Path

import torch

import erasekit
from erasekit.bench.run import fd_scenes, frechet, row_options, row_spec
from erasekit.bench.table import rate_cell
from erasekit.detectors.shapeworld import shipped_classifier
from erasekit.evaluation.prompts import shapeworld_sets
from erasekit.evaluation.redteam import AttackOutcome, attack_once
from erasekit.evaluation.scoring import score_shapeworld
from erasekit.attacks import ATTACKS
from erasekit.harden import HARDENABLE, HardenConfig, save_hardened
from erasekit.harden.config import STEPS
from erasekit.utils.files import slug


def kept(pipe, concept: str, classifier, seeds: int) -> dict:
    """Preservation (the attribute's other values) and benign attributes kept (explicit prompts), as the bench
    counts them on `seeds` seeds a prompt: (hits, n) each; and FD on 64 scenes without the concept."""
    attribute, sets = shapeworld_sets(concept, seeds)
    out = {}
    for name, key in (("other", "accuracy"), ("explicit", "benign_kept")):
        items = sets[name]
        images = erasekit.generate(pipe, [i.prompt for i in items], [i.seed for i in items], progress=False)
        n = len(items) if name == "other" else sum(len(i.expected) - 1 for i in items)
        out[name] = (round(score_shapeworld(images, items, name, attribute, classifier)[key] * n), n)
    prompts, reference = fd_scenes(concept, 64)
    out["fd"] = frechet(classifier, erasekit.generate(pipe, prompts, list(range(64)), progress=False), reference)
    return out


def attacked(pipe, attack: str, concept: str, images: int, classifier, attack_seeds: int) -> AttackOutcome:
    """A fresh attack run on `images` images split over attack seeds 0 … attack_seeds − 1 (one concept-inversion
    run learns one word for all its images: the rate of one run says little about the next seed's)."""
    share = [images // attack_seeds + (k < images % attack_seeds) for k in range(attack_seeds)]
    seeded = "seed" in inspect.signature(ATTACKS[attack]).parameters  # Ring-A-Bell's sweep has no seed
    runs = [attack_once(pipe, attack, concept, n, classifier, first_seed=sum(share[:k]), **({"seed": k} if seeded
                                                                                            else {}))
            for k, n in enumerate(share)]
    return AttackOutcome(attack, sum(r.hits for r in runs), images, sum(r.seconds for r in runs), runs[0].prompt)


def measure(pipe, edit, concept: str, attacks: list[str], images: int, classifier, seeds: int,
            attack_seeds: int) -> dict:
    edit.apply(pipe)
    try:
        return {**{a: attacked(pipe, a, concept, images, classifier, attack_seeds) for a in attacks},
                **kept(pipe, concept, classifier, seeds)}
    finally:
        edit.remove(pipe)


def row(concept: str, label: str, before: dict, after: dict, record: dict, attacks: list[str]) -> str:
    cells = [f"{rate_cell(before[a].hits, before[a].n)} → {rate_cell(after[a].hits, after[a].n)}" for a in attacks]
    cells += [f"{rate_cell(*before[k])} → {rate_cell(*after[k])}" for k in ("other", "explicit")]
    cells += [f"{before['fd']:.1f} → {after['fd']:.1f}",
              f"{record['kept_round']} ({record['stopped']})", f"{record['seconds']:.0f} s"]
    return f"| {concept} | {label} | " + " | ".join(cells) + " |"


def table(rows: list[str], attacks: list[str], images: int, rounds: int, restarts: int, seeds: int,
          hardened: list[str], attack_seeds: int) -> str:
    head = ("| concept | start | " + " | ".join(f"{a} before → after" for a in attacks)
            + " | preservation | benign kept | FD | round kept | harden time |\n|---|---|"
            + "---|" * (len(attacks) + 5) + "\n")
    return (head + "\n".join(rows) + f"\n\nAttack success before → after hardening against "
            f"{', '.join(hardened)} (at most {rounds} rounds; the "
            f"loop's attack runs: {restarts} a round per attack, 16 images each, on attack seeds from 1000, image "
            "seeds from 100 000), each "
            f"measured by fresh runs: {images} images (seeds 0–{images - 1}, attack seeds 0–{attack_seeds - 1}, four "
            "prompts naming the "
            "concept), rate% [95 % Wilson interval] (k/n). Preservation: the attribute's other values (bench set, "
            f"{seeds} seeds a prompt); benign kept: the explicit prompts' other attributes; FD: 64 scenes without the concept vs "
            "renders. Harden time: the whole loop (attacks, erasure steps, validation).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["triangle", "tobias renn"])
    parser.add_argument("--methods", nargs="+", default=["uce", "rece", "trce-1"])
    parser.add_argument("--attacks", nargs="+", default=["concept-inversion", "unlearndiffatk"], choices=HARDENABLE)
    parser.add_argument("--also", nargs="+", default=[], choices=sorted(ATTACKS),
                        help="attacks measured before and after (fresh runs) that the loop does not harden against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--attack-seeds", type=int, default=1,
                        help="attack seeds the fresh runs' images are split over (seeds 0 … K − 1)")
    parser.add_argument("--kept-seeds", type=int, default=32,
                        help="seeds a prompt for preservation and benign attributes (bench sets)")
    parser.add_argument("--restarts", type=int, default=HardenConfig.restarts,
                        help="the loop's attack runs per attack per round")
    parser.add_argument("--anchor-alone", action="store_true",
                        help="HardenConfig.anchor_alone: P4D-N's prompts map to the concept's anchor")
    parser.add_argument("--step", default="auto", choices=STEPS,
                        help="HardenConfig.step: how a round erases (auto: closed form for uce, rece, trce)")
    parser.add_argument("--eta", type=float, default=HardenConfig.eta,
                        help="HardenConfig.eta: the push past the reference (0: no gentler retry)")
    parser.add_argument("--tuning", default="{}", help="HardenConfig.tuning as JSON (the fine-tuning step's "
                        "options, e.g. '{\"preserve_latents\": \"own\"}')")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="out/harden_table.md")
    parser.add_argument("--save", metavar="DIR", help="keep each hardened edit and its history plot under DIR")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe, classifier = erasekit.load_pipeline(None), shipped_classifier()
    out, rows = Path(args.out), []
    out.parent.mkdir(parents=True, exist_ok=True)
    for concept in args.concepts:
        for label in args.methods:
            method, options = row_options(label, concept)
            edit = erasekit.erase(pipe, method, row_spec(label, concept), **options)
            measured = args.attacks + [a for a in args.also if a not in args.attacks]
            before = measure(pipe, edit, concept, measured, args.images, classifier, args.kept_seeds,
                             args.attack_seeds)
            t = time.perf_counter()
            hardened = erasekit.harden(pipe, edit, args.attacks, args.rounds, restarts=args.restarts,
                                       anchor_alone=args.anchor_alone, step=args.step, eta=args.eta, tuning=json.loads(args.tuning),
                                       backoff=HardenConfig.backoff if args.eta > 0 else (), log=print)
            print(f"{concept} | {label}: hardened in {time.perf_counter() - t:.0f} s", flush=True)
            if args.save:
                save_hardened(hardened, Path(args.save) / f"{slug(concept)}-{label}")
            after = measure(pipe, hardened, concept, measured, args.images, classifier, args.kept_seeds,
                            args.attack_seeds)
            rows.append(row(concept, label, before, after, hardened.metadata["protocol"]["hardening"], measured))
            print(rows[-1], flush=True)
            out.write_text(table(rows, measured, args.images, args.rounds, args.restarts, args.kept_seeds,
                                 args.attacks, args.attack_seeds))
    print(out.read_text())


if __name__ == "__main__":
    main()
