"""Try one erasure method with options on ShapeWorld, measured on image seeds the bench does not use (100 and up):
the target detected per form (explicit, synonym, implicit) and on held-out phrasings, preservation, the benign
attributes kept, FD (the bench's 64 scenes) and the training seconds; prints one JSON line.

    python scripts/tune_shapeworld.py triangle forceforget '{"reader_dims": 1, "lr": 3e-2}' --bench-options
    python scripts/tune_shapeworld.py "tobias renn" esd-x '{"trainable": "xattn-kv"}' --seeds 4 --threads 1

`--bench-options` starts from the bench's options for the method (bench.VARIANTS / row_options) and lays the
JSON over them; `--plain` erases the bare word instead of the `shapeworld/<concept>` preset; `--save DIR` keeps
the edit, `--edit DIR` measures a saved edit instead of training one, `--grid PNG` draws the concept's and other
shapes' prompts with it; a ForceForget edit's reward per round (every fourth) is printed before the figures.
"""
import argparse
import json
import time

import torch

import erasekit


def measure(pipe, concept: str, seeds: int, offset: int = 100) -> dict:
    from erasekit.bench.gie_sweep import form_counts
    return {k: f"{hits}/{n}" for k, (hits, n) in form_counts(pipe, concept, seeds, offset).items()}


def options_for(concept: str, method: str, extra: dict, bench: bool) -> tuple[str, dict]:
    if not bench:
        return method, extra
    from erasekit.bench.run import row_options
    name, options = row_options(method, concept)
    return name, {**options, **extra}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("concept")
    parser.add_argument("method", help="a method or a bench row name (with --bench-options)")
    parser.add_argument("options", nargs="?", default="{}", help="method options as JSON")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per phrasing (4: 20 images a form)")
    parser.add_argument("--bench-options", action="store_true")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", default="")
    parser.add_argument("--edit", default="", help="measure this saved edit (no training; options are ignored)")
    parser.add_argument("--grid", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from erasekit.bench.run import fd_scenes, frechet, held_out_detection
    from erasekit.concepts import preset, resolve
    from erasekit.detectors.shapeworld import shipped_classifier
    method, options = options_for(args.concept, args.method, json.loads(args.options), args.bench_options)
    pipe = erasekit.load_pipeline(None)
    spec = resolve([args.concept]) if args.plain else preset("shapeworld/" + args.concept)
    start = time.perf_counter()
    edit = erasekit.load_edit(args.edit) if args.edit else erasekit.erase(pipe, method, spec, **options)
    seconds = None if args.edit else time.perf_counter() - start
    if args.save:
        edit.save(args.save)
    for record in edit.metadata["protocol"].get("rewards", [])[::4]:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}))
    edit.apply(pipe)
    if args.grid:
        from erasekit.utils.files import grid
        prompts = [f"a red {args.concept}", f"a blue {args.concept} on a white background", "a red circle",
                   "a blue square on a white background", "a green star", "a purple striped diamond"]
        grid(erasekit.generate(pipe, prompts * 2, list(range(12)), progress=False), columns=6, scale=2).save(args.grid)
    counts = measure(pipe, args.concept, args.seeds)
    rate, n = held_out_detection(pipe, args.concept, shipped_classifier(), 2 * args.seeds)
    prompts, reference = fd_scenes(args.concept, 64)
    fd = frechet(shipped_classifier(), erasekit.generate(pipe, prompts, list(range(64)), progress=False), reference)
    print(json.dumps({"concept": args.concept, "method": method, "options": options, "edit": args.edit or None,
                      "train_s": None if seconds is None else round(seconds, 1),
                      "fd": round(fd, 1), "heldout": f"{round(rate * n)}/{n}", **counts}), flush=True)


if __name__ == "__main__":
    main()
