"""`erasekit harden`: red-team in the loop on a weight-delta edit, until the attacks fail."""
from __future__ import annotations

from .options import COUNT, PROBABILITY, add_model

ATTACKS = ("concept-inversion", "unlearndiffatk", "p4d", "ring-a-bell-ga")
STEPS = ("auto", "closed-form", "tune", "both")  # harden.config's (kept light: the CLI imports no torch to parse)


def add_parser(sub) -> None:
    p = sub.add_parser("harden", help="harden an edit (uce, rece, trce, esd-x, esd-u, abo): attack, erase what "
                       "the attacks find, repeat", description="Each round attacks the model with the edit (and "
                       "the hardening so far) on seeds of its own, erases the adversarial tokens that still bring "
                       "the concept back — in closed form on the K/V of a closed-form edit (uce, rece, trce), by a "
                       "few steps of fine-tuning on a fine-tuned one (esd-x, esd-u, abo) — with the preserved "
                       "concepts held, and "
                       "checks preservation (and, on ShapeWorld, that the target prompts' colours and backgrounds "
                       "are still drawn); it stops when every attack's success is under --target by its 95 % "
                       "interval, when no attack finds the concept, after --rounds, or when preservation or the "
                       "benign content would drop more than --max-drop (keeping the round before). "
                       "Writes one edit (the base edit plus the hardening) to DIR with the rounds' history in its "
                       "protocol, and DIR/history.png. ShapeWorld concepts (success and preservation are judged by "
                       "its classifier).")
    add_model(p)
    p.add_argument("--edit", required=True, metavar="DIR", help="the edit to harden (uce, rece, trce, esd-x, esd-u, "
                   "abo)")
    p.add_argument("--attack", action="append", metavar="NAME", help=f"an attack to harden against (repeat; "
                   f"{', '.join(ATTACKS)}); default: concept-inversion and unlearndiffatk")
    p.add_argument("--rounds", type=int, default=3, help="at most this many hardening rounds (default 3)")
    p.add_argument("--target", type=PROBABILITY, default=0.05, help="stop when every attack's success rate is "
                   "under this by its 95 %% interval on the round's images (default 0.05)")
    p.add_argument("--max-drop", type=PROBABILITY, default=0.05, help="largest drop of preservation (and of the "
                   "benign content kept) from the base edit's accepted (default 0.05)")
    p.add_argument("--images", type=COUNT, default=16, help="images per attack run (default 16)")
    p.add_argument("--restarts", type=COUNT, default=None, help="attack runs per attack per round, each on seeds "
                   "of its own; every run's finds are erased (default: HardenConfig's)")
    p.add_argument("--anchor-alone", action="store_true", help="map adversarial tokens that are the whole prompt "
                   "(P4D-N's) to the concept's anchor, not to the empty prompt (the model's prior)")
    p.add_argument("--step", choices=STEPS, default="auto", help="how a round erases: closed-form (closed-form "
                   "edits only), tune (fine-tuning, any of them), both (the closed form, then fine-tuning on top; "
                   "closed-form edits); auto (default): by the edit's method")
    p.add_argument("--tune-steps", type=COUNT, default=None, help="optimiser steps of a fine-tuning round "
                   "(default: TuningStep's, 50)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.set_defaults(run=run)


def run(args) -> int:
    from ..harden import harden_folder
    edit = harden_folder(args.edit, args.out, args.model, args.overwrite, log=print,
                         attacks=tuple(args.attack or ATTACKS[:2]), rounds=args.rounds, target=args.target,
                         max_drop=args.max_drop, images=args.images, anchor_alone=args.anchor_alone, step=args.step,
                         tuning={} if args.tune_steps is None else {"steps": args.tune_steps},
                         **({} if args.restarts is None else {"restarts": args.restarts}))
    record = edit.metadata["protocol"]["hardening"]
    for h in record["rounds"]:
        rates = ", ".join(f"{a} {100 * r:.1f}%" for a, r in h["success"].items())
        push = "" if h.get("eta") is None else f" (η = {h['eta']:g})"
        benign = "" if h.get("benign") is None else f", benign kept {100 * h['benign']:.1f}%"
        print(f"round {h['round']}{push}: {rates}; preservation {100 * h['preservation']:.1f}%{benign}"
              + ("" if h["accepted"] else " (refused: under a floor)"))
    print(f"kept round {record['kept_round']} ({record['stopped']}); wrote {args.out} and {args.out}/history.png")
    return 0
