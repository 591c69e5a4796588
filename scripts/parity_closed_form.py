"""Each closed-form behaviour (erasekit's default and `parity="authors"`) against a textbook re-derivation in
float64: max over K/V matrices of ‖ΔW_erasekit − ΔW_textbook‖ / ‖ΔW_textbook‖. The textbook side encodes the
prompts, picks the rows by position and solves each matrix with an explicit inverse (`solve_reference`).

    python scripts/parity_closed_form.py          # on ShapeWorld; --model DIR for another pipeline
"""
import argparse

import torch

import erasekit
from erasekit.closed_form.prior import caption_list, caption_prior
from erasekit.closed_form.rows import CONTEXT_TEMPLATES, context_rows
from erasekit.closed_form.solver import solve_reference
from erasekit.concepts import resolve
from erasekit.methods.rece import RECEConfig, derive_embedding, rece_epochs
from erasekit.methods.trce import TRCEConfig, pairs, stage1_rows
from erasekit.methods.uce import UCEConfig, uce_updates
from erasekit.models import kv_weights


def rows_of(pipe, text):
    return erasekit.encode(pipe, [text], warn=False).embeddings[0].double()


def gap(ours, reference) -> float:
    return max(((ours[n].full() - reference[n]).norm() / reference[n].norm()).item() for n in reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--concept", default="triangle")
    parser.add_argument("--anchor", default="diamond")
    parser.add_argument("--preserve", nargs="*", default=["circle", "square"])
    args = parser.parse_args()
    pipe = erasekit.load_pipeline(args.model)
    w = {n: t.double() for n, t in kv_weights(pipe.unet).items()}
    spec = resolve([args.concept], anchor=args.anchor, preserve=args.preserve)
    c, a = args.concept, args.anchor
    count = lambda text: len(pipe.tokenizer(text, add_special_tokens=False).input_ids)  # noqa: E731
    c2, _ = caption_prior(pipe, caption_list(pipe, [c]))
    results = {}

    erase, value = rows_of(pipe, c)[count(c):count(c) + 1], rows_of(pipe, a)[count(a):count(a) + 1]
    kept = torch.cat([rows_of(pipe, p)[count(p):count(p) + 1] for p in args.preserve])
    results["uce, parity=authors"] = gap(uce_updates(pipe, spec, UCEConfig(parity="authors"), w),
                                         solve_reference(w, erase, value, preserve_cov=kept.T @ kept, lam=0.5))

    erase, value = context_rows(pipe, [c], [a], CONTEXT_TEMPLATES)
    kept = context_rows(pipe, args.preserve, args.preserve, CONTEXT_TEMPLATES)[0]
    prior = c2 * ((erase ** 2).sum() / c2.trace())
    results["uce, default"] = gap(uce_updates(pipe, spec, UCEConfig(), w), solve_reference(
        w, erase, value - (erase - value), preserve_cov=kept.T @ kept + prior, lam=0.5))

    k, length = count(c), pipe.tokenizer.model_max_length
    ka = count(a)
    n = min(length - k, length - ka)
    kept = torch.cat([rows_of(pipe, p) for p in [*args.preserve, ""]])
    start = solve_reference(w, rows_of(pipe, c)[k:k + n], rows_of(pipe, a)[ka:ka + n],
                            preserve_cov=max(0.1, 1 / len(args.preserve)) * kept.T @ kept, lam=0.5)
    config = RECEConfig(parity="authors", epochs=1, lam_reg=0.1, validator=None)
    epochs = dict(rece_epochs(pipe, spec, config))
    results["rece start, parity=authors"] = gap(epochs[0], start)
    current = {name: w[name] + start[name] for name in w}
    derived = derive_embedding(current, w, rows_of(pipe, c), 0.1)
    space = rows_of(pipe, " ")
    step = solve_reference(current, derived, space, preserve_cov=0.1 * space.T @ space, lam=0.1)
    results["rece epoch 1, parity=authors"] = gap(epochs[1], {name: start[name] + step[name] for name in w})

    trce = TRCEConfig(stages=1, parity="authors", lam=1e-6)
    malicious, safe = stage1_rows(pipe, spec, trce)
    m = len(pairs(spec))
    from erasekit.methods.trce import REFERENCE_TOKENS
    c2t, tokens = caption_prior(pipe, caption_list(pipe, spec.targets))
    coefficient = 0.01 ** 2 / 3e4 * REFERENCE_TOKENS / tokens
    from erasekit.closed_form.solver import solve
    ours = solve(w, malicious, safe, erase_weights=torch.full((len(malicious),), 1 / m),
                 preserve_cov=coefficient * c2t, lam=1e-6)
    enc_m = erasekit.encode(pipe, [p for p, _ in pairs(spec)], warn=False)
    enc_s = erasekit.encode(pipe, [s for _, s in pairs(spec)], warn=False)
    index = torch.arange(m)
    reference = solve_reference(w, enc_m.embeddings[index, enc_m.eot_index].double(),
                                enc_s.embeddings[index, enc_s.eot_index].double(),
                                erase_weights=torch.full((m,), 1 / m, dtype=torch.float64),
                                preserve_cov=coefficient * c2t, lam=1e-6)
    results["trce stage 1 (1/N), parity=authors"] = gap(ours, reference)

    print(f"max relative difference of ΔW against the textbook re-derivation (float64), {args.concept} → "
          f"{args.anchor}, preserving {', '.join(args.preserve)}:")
    for name, value in results.items():
        print(f"  {name:<38} {value:.1e}")


if __name__ == "__main__":
    main()
