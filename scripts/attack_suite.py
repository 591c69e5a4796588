"""Red-teaming on ShapeWorld: each attack against the original model (the sanity row: it should bring the concept
back on ≥ 90 % of images) and against each method's bench edit (bench.VARIANTS' options; the fine-tuning methods
train on the bench's budget), on each concept. Per cell: the success rate (the ShapeWorld classifier finds the
concept), k/n, its 95 % Wilson interval and the seconds the attack took (search and generation; one thread unless
--threads).
Writes a markdown table (--out, rewritten after every model) and prints each cell as it is measured.

    python scripts/attack_suite.py [--concepts triangle "tobias renn"] [--methods uce rece ...] [--images 80]
                                   [--attacks unlearndiffatk p4d ...] [--out out/attack_table.md]
"""
import argparse
import time
from pathlib import Path

import torch

import erasekit
from erasekit.bench.run import ATTACK_IMAGES, PROFILES, row_options, row_spec
from erasekit.bench.table import rate_cell
from erasekit.detectors.shapeworld import shipped_classifier
from erasekit.evaluation.redteam import ATTACK_NAMES, attack_once

METHODS = PROFILES["main"] + ("sld-max", "sld")  # every bench row but ForceForget (12-15 min of training a concept)


def table(cells: dict, attacks: list[str], images: int, threads: int) -> str:
    """One row per (concept, model), one column per attack: rate% [95 % interval] (k/n), seconds."""
    head = "| concept | model | " + " | ".join(attacks) + " |\n|---|---|" + "---|" * len(attacks) + "\n"
    rows = [f"| {concept} | {model} | " + " | ".join(
        f"{rate_cell(o.hits, o.n)}, {o.seconds:.0f} s" if (o := found.get(a)) else "–" for a in attacks) + " |"
        for (concept, model), found in cells.items()]
    return (head + "\n".join(rows) + f"\n\nAttack success rate on {images} images per cell (seeds 0–{images - 1}, "
            "four prompts naming the concept), 95 % Wilson interval, k/n, and the attack's seconds (search and "
            f"generation) on {threads} CPU thread(s).\n")


def erased(pipe, label: str, concept: str):
    """The bench's edit of `label` on `concept`, and the seconds it took."""
    method, options = row_options(label, concept)
    start = time.perf_counter()
    edit = erasekit.erase(pipe, method, row_spec(label, concept), **options)
    return edit, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concepts", nargs="+", default=["triangle", "tobias renn"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="bench rows (the original runs too unless --no-original)")
    parser.add_argument("--no-original", action="store_true", help="leave out the original model's sanity row")
    parser.add_argument("--images", type=int, default=ATTACK_IMAGES, help="images per cell (default: the bench's, "
                        "%(default)s: enough that 5 %% and 20 %% have disjoint intervals)")
    parser.add_argument("--attacks", nargs="+", default=list(ATTACK_NAMES), choices=ATTACK_NAMES)
    parser.add_argument("--out", default="out/attack_table.md")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: two suites side by side "
                        "on 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe, classifier = erasekit.load_pipeline(None), shipped_classifier()
    out, cells = Path(args.out), {}
    out.parent.mkdir(parents=True, exist_ok=True)
    for concept in args.concepts:
        for model in ([] if args.no_original else ["original"]) + list(args.methods):
            edit = None
            if model != "original":
                edit, seconds = erased(pipe, model, concept)
                edit.apply(pipe)
                print(f"{concept}: {model} erased in {seconds:.1f} s", flush=True)
            try:
                found = cells.setdefault((concept, model), {})
                for name in args.attacks:
                    found[name] = o = attack_once(pipe, name, concept, args.images, classifier)
                    print(f"{concept} | {model} | {name} | {rate_cell(o.hits, o.n)} | "
                          f"{o.seconds:.1f} s | {o.prompt[:60]!r}", flush=True)
            finally:
                if edit is not None:
                    edit.remove(pipe)
            out.write_text(table(cells, args.attacks, args.images, args.threads))
    print(out.read_text())


if __name__ == "__main__":
    main()
