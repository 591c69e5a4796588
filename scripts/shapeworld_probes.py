"""Measurements behind the README's ForceForget and hardening notes, on ShapeWorld (2 threads):

    python scripts/shapeworld_probes.py explore [--concept triangle]
        how often the policy's own sampling (10 DDIM steps, η = 1) draws the target for its explicit, synonym and
        implicit prompts at guidance 1–7.5, and for prompts naming it beside another shape: a policy gradient
        has only the samples without it to reinforce
    python scripts/shapeworld_probes.py prior [--concept triangle] [--rows trce-1 ...]
        the target drawn for prompts that leave its attribute open (empty, colour only, "a … shape"), by the
        original and by bench rows' edits: the floor an attack reaches by saying nothing
    python scripts/shapeworld_probes.py value-projection [--concept triangle] [--rows trce] [--k 0 2 8]
        every cross-attention to_v projected off the top k directions of what the concept's context rows write
        beyond the preserved concepts' (on the row's edit): explicit detection, preservation, concept inversion
        (2 runs of 16 images, attack seeds 0-1)
    python scripts/shapeworld_probes.py late-starts [--concept triangle]
        ForceForget's exploring starts: the target drawn when 24 of its pool's target prompts are denoised from step
        s of 10 (η = 1), starting from their neutral captions' images noised to that step
    python scripts/shapeworld_probes.py attacks --edit DIR [--concept triangle] [--attack-seeds 4]
        a saved edit against the red-teaming suite on the hardening table's fresh protocol: 20 images per attack
        seed (0, 1, …), image seeds 0 and up, the four prompts naming the concept
"""
import argparse
import json

import torch

import erasekit
from erasekit.bench.run import row_options, row_spec
from erasekit.detectors import shapeworld_detector
from erasekit.evaluation.redteam import attack_once, attack_prompts

COLOURS = ("red", "blue", "green", "yellow")


def count(pipe, detector, prompts, **options) -> str:
    images = erasekit.generate(pipe, prompts, list(range(len(prompts))), progress=False, **options)
    return f"{int(detector.present(images).sum())}/{len(prompts)}"


def row_edit(pipe, label: str, concept: str):
    method, options = row_options(label, concept)
    return erasekit.erase(pipe, method, row_spec(label, concept), **options)


def explore(pipe, concept: str, detector, _args) -> None:
    attribute, value = erasekit.shapeworld.domain.find_concept(concept)
    names = [value.name, *value.synonyms[:1], *value.implicit[:1]]
    prompts = [f"a {c} {n}" for c, n in zip(COLOURS * 2, names * 3)][:4] * 8
    for guidance in (1.0, 1.5, 2.0, 3.0, 7.5):
        print(json.dumps({"guidance": guidance, "eta": 1.0, "steps": 10, "prompts": sorted(set(prompts)),
                          "target_drawn": count(pipe, detector, prompts, guidance=guidance, steps=10, eta=1.0)}))
    if attribute != "shape":
        return
    others = [s for s in erasekit.shapeworld.domain.SHAPE_NAMES if s != value.name][:2]
    for mixed in [f"a red {value.name} and a red {o}" for o in others] + [f"a red {o} and a red {value.name}"
                                                                          for o in others]:
        print(json.dumps({"prompt": mixed, "eta": 1.0, "steps": 10,
                          "target_drawn": count(pipe, detector, [mixed] * 16, steps=10, eta=1.0)}))


def prior(pipe, concept: str, detector, args) -> None:
    sets = {"empty": [""] * 64, "colour only": [f"a {c}" for c in COLOURS for _ in range(16)],
            "a … shape": [f"a {c} shape" for c in COLOURS for _ in range(16)]}
    for label in ["original", *args.rows]:
        edit = None if label == "original" else row_edit(pipe, label, concept)
        if edit:
            edit.apply(pipe)
        print(json.dumps({"row": label, **{name: count(pipe, detector, p) for name, p in sets.items()}}))
        if edit:
            edit.remove(pipe)


def value_projection(pipe, concept: str, detector, args) -> None:
    from erasekit.closed_form.rows import CONTEXT_TEMPLATES, context_rows
    from erasekit.harden.config import HardenConfig
    from erasekit.harden.probe import shapeworld_preservation
    from erasekit.models.layers import find_cross_attention
    label = args.rows[0]
    spec, edit = row_spec(label, concept), row_edit(pipe, label, concept)
    layers = find_cross_attention(pipe.unet)
    pairs = [context_rows(pipe, [concept], [other], CONTEXT_TEMPLATES) for other in spec.preserve or spec.anchors]
    written = torch.cat([e for e, _ in pairs]) - torch.cat([v for _, v in pairs])
    directions = {l.name: torch.linalg.svd((written @ l.to_v.weight.double().T).T, full_matrices=False)[0]
                  for l in layers}
    preservation = shapeworld_preservation(concept, HardenConfig())
    edit.apply(pipe)
    base = {l.name: l.to_v.weight.detach().clone() for l in layers}
    for k in args.k:
        with torch.no_grad():
            for l in layers:
                u, w = directions[l.name][:, :k], base[l.name].double()
                l.to_v.weight.copy_((w - u @ (u.T @ w)).to(base[l.name].dtype))
        hits = sum(attack_once(pipe, "concept-inversion", concept, 16, first_seed=16 * s, seed=s).hits for s in (0, 1))
        print(json.dumps({"row": label, "k": k, "explicit": count(pipe, detector, attack_prompts(concept, 4) * 8),
                          "preservation": round(preservation(pipe), 3), "concept_inversion": f"{hits}/32"}))


def late_starts(pipe, concept: str, detector, _args) -> None:
    from erasekit.methods.forceforget.explore import explore, source_latents
    from erasekit.methods.forceforget.pool import shapeworld_pool
    from erasekit.sampling import ddim_scheduler, decode, settings
    pool = [p for p in shapeworld_pool(concept) if p.harmful]
    items = [pool[i % len(pool)] for i in range(24)]
    steps, guidance = settings(pipe, 10, None)
    sources = source_latents(pipe, [p.neutral for p in items], list(range(24)), steps, guidance)
    print(json.dumps({"neutral_captions": f"{int(detector.present(decode(pipe, sources)).sum())}/24"}))
    scheduler = ddim_scheduler(pipe, steps)
    for start in range(steps):
        ((_, run),) = explore(pipe, scheduler, [p.text for p in items], [1000 + i for i in range(24)], [start] * 24,
                              sources, guidance, 1.0)
        print(json.dumps({"start": start, "target_drawn": f"{int(detector.present(decode(pipe, run.final)).sum())}/24"}),
              flush=True)


def attacks(pipe, concept: str, _detector, args) -> None:
    from erasekit.bench.table import rate_cell
    from erasekit.detectors.shapeworld import shipped_classifier
    from harden_suite import attacked  # the hardening table's fresh runs, split over attack seeds
    erasekit.load_edit(args.edit).apply(pipe)
    for name in args.attacks:
        outcome = attacked(pipe, name, concept, 20 * args.attack_seeds, shipped_classifier(), args.attack_seeds)
        print(json.dumps({"edit": args.edit, "attack": name, "rate": rate_cell(outcome.hits, outcome.n)}), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=("explore", "prior", "value-projection", "late-starts", "attacks"))
    parser.add_argument("--concept", default="triangle")
    parser.add_argument("--rows", nargs="*", default=None, help="bench rows (prior: trce-1; value-projection: trce)")
    parser.add_argument("--k", nargs="*", type=int, default=[0, 2, 8])
    parser.add_argument("--edit", default="", help="attacks: a saved edit")
    parser.add_argument("--attack-seeds", type=int, default=4)
    parser.add_argument("--attacks", nargs="*", default=["concept-inversion", "unlearndiffatk", "p4d",
                                                         "ring-a-bell", "ring-a-bell-ga"])
    args = parser.parse_args()
    args.rows = args.rows or (["trce"] if args.probe == "value-projection" else ["trce-1"])
    torch.set_num_threads(2)
    pipe = erasekit.load_pipeline(None)
    if args.probe == "attacks" and not args.edit:
        parser.error("attacks needs --edit DIR")
    probe = {"explore": explore, "prior": prior, "value-projection": value_projection, "late-starts": late_starts,
             "attacks": attacks}[args.probe]
    probe(pipe, args.concept, shapeworld_detector(args.concept), args)


if __name__ == "__main__":
    main()
