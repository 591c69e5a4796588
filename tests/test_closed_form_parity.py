"""#17: erasekit's closed-form defaults (context rows, caption prior) and the authors' behaviour one option away,
each pinned against a small textbook re-derivation (encode, pick rows by position, solve with the explicit
inverse)."""
import pytest
import torch

import erasekit
from erasekit.closed_form.prior import caption_list, caption_prior
from erasekit.closed_form.rows import CONTEXT_TEMPLATES, context_rows
from erasekit.closed_form.solver import solve_reference
from erasekit.concepts import resolve
from erasekit.methods.rece import derive_embedding
from erasekit.methods.trce import TEMPLATES, pairs
from erasekit.models import kv_weights


@pytest.fixture
def sd1(tiny_dirs):
    return erasekit.load_pipeline(tiny_dirs["sd1"])


def rows_of(pipe, text):
    return erasekit.encode(pipe, [text]).embeddings[0].double()


def count(pipe, text):
    return len(pipe.tokenizer(text, add_special_tokens=False).input_ids)


def deltas(pipe, edit):
    return {n: edit.delta("unet." + n).double() for n in kv_weights(pipe.unet)}


def assert_same(pipe, edit, expected):
    for name, delta in deltas(pipe, edit).items():
        torch.testing.assert_close(delta, expected[name].float().double(), rtol=1e-4, atol=1e-6)


def test_context_rows_follow_the_concept_to_the_end(sd1):
    length = sd1.tokenizer.model_max_length
    erase, value = context_rows(sd1, ["xylophone"], ["dog"], ["a {} on it"])
    start, k = 2, count(sd1, "xylophone")  # SoT, "a", then the concept
    target, anchor = rows_of(sd1, "a xylophone on it"), rows_of(sd1, "a dog on it")
    n = length - start - k
    torch.testing.assert_close(erase, torch.cat([target[start:start + k], target[start + k:start + k + n]]))
    expected = torch.cat([anchor[[start + min(j, 0) for j in range(k)]], anchor[start + 1:start + 1 + n]])
    torch.testing.assert_close(value, expected)
    # an empty anchor: the concept's rows map to the row before it, the rest to the frame without the concept
    erase, value = context_rows(sd1, ["dog"], [""], ["a {} on it"])
    empty = rows_of(sd1, "a on it")
    torch.testing.assert_close(value, torch.cat([empty[1:2], empty[2:2 + length - 3]]))


def test_uce_default_is_context_rows_with_the_caption_prior(sd1, tmp_path):
    spec = resolve(["nude"], anchor="", preserve=["dog"])
    edit = erasekit.erase(sd1, "uce", spec, cache_dir=str(tmp_path))
    erase, value = context_rows(sd1, ["nude"], [""], CONTEXT_TEMPLATES)
    kept, _ = context_rows(sd1, ["dog"], ["dog"], CONTEXT_TEMPLATES)
    c2, _ = caption_prior(sd1, caption_list(sd1, ["nude"]), str(tmp_path))
    prior = c2 * ((erase ** 2).sum() / c2.trace())  # trace equal to the erase rows' (weight 1)
    weights = {n: w.double() for n, w in kv_weights(sd1.unet).items()}
    pushed = value - (erase - value)  # η = 1: past the anchor, away from the target
    assert_same(sd1, edit, solve_reference(weights, erase, pushed, preserve_cov=kept.T @ kept + prior, lam=0.5))


def test_uce_authors_parity_is_the_last_word_row_without_prior(sd1):
    edit = erasekit.erase(sd1, "uce", resolve(["nude"], anchor="cat"), parity="authors")
    last_t, last_a = count(sd1, "nude"), count(sd1, "cat")
    erase, value = rows_of(sd1, "nude")[last_t:last_t + 1], rows_of(sd1, "cat")[last_a:last_a + 1]
    weights = {n: w.double() for n, w in kv_weights(sd1.unet).items()}
    assert_same(sd1, edit, solve_reference(weights, erase, value, lam=0.5))


def test_rece_authors_start_keeps_every_row_of_empty_and_the_preserved(sd1):
    spec = resolve(["nude"], anchor="", preserve=["dog", "cat", "tree"])
    edit = erasekit.erase(sd1, "rece", spec, parity="authors", epochs=1, validator=None)
    k, length = count(sd1, "nude"), sd1.tokenizer.model_max_length
    erase, value = rows_of(sd1, "nude")[k:], rows_of(sd1, "")[0:length - k]
    kept = torch.cat([rows_of(sd1, t) for t in ("dog", "cat", "tree", "")])
    weights = {n: w.double() for n, w in kv_weights(sd1.unet).items()}
    start = solve_reference(weights, erase, value, preserve_cov=max(0.1, 1 / 3) * kept.T @ kept, lam=0.5)
    current = {n: weights[n] + start[n] for n in weights}
    derived = derive_embedding(current, weights, rows_of(sd1, "nude"), 0.1)
    space = rows_of(sd1, " ")
    step = solve_reference(current, derived, space, preserve_cov=0.1 * space.T @ space, lam=0.1)
    assert_same(sd1, edit, {n: start[n] + step[n] for n in weights})


def test_rece_style_epochs_use_the_anchor_and_keep_the_other_artists(sd1):
    spec = resolve(["nude"], anchor="cat", preserve=["dog"])
    spec.kind = "style"
    edit = erasekit.erase(sd1, "rece", spec, epochs=1, lam_reg=1e-3, validator=None,
                          uce=erasekit.methods.make_config("uce", parity="authors"))
    weights = {n: w.double() for n, w in kv_weights(sd1.unet).items()}
    k, ka = count(sd1, "nude"), count(sd1, "cat")
    kept_start = rows_of(sd1, "dog")[count(sd1, "dog"):count(sd1, "dog") + 1]
    start = solve_reference(weights, rows_of(sd1, "nude")[k:k + 1], rows_of(sd1, "cat")[ka:ka + 1],
                            preserve_cov=kept_start.T @ kept_start, lam=0.5)
    current = {n: weights[n] + start[n] for n in weights}
    derived = derive_embedding(current, weights, rows_of(sd1, "nude"), 1e-3)
    kept = torch.cat([rows_of(sd1, ""), rows_of(sd1, "dog")])
    step = solve_reference(current, derived, rows_of(sd1, "cat"), preserve_cov=0.1 * kept.T @ kept, lam=0.1)
    assert_same(sd1, edit, {n: start[n] + step[n] for n in weights})


def test_trce_divides_the_erase_sums_by_the_number_of_pairs(sd1, tmp_path):
    spec = resolve(["nude"], anchor="cat")
    options = {"stages": 1, "lam": 1e-3, "cache_dir": str(tmp_path), "parity": "authors"}
    mean = erasekit.erase(sd1, "trce", spec, **options)
    total = erasekit.erase(sd1, "trce", spec, weighting="sum", **options)
    erase, value = trce_rows(sd1, spec)
    c2, tokens = caption_prior(sd1, caption_list(sd1, ["nude"]), str(tmp_path))
    prior = 0.01 ** 2 / 3e4 * 30_000 * 77 / tokens * c2
    weights = {n: w.double() for n, w in kv_weights(sd1.unet).items()}
    n = len(erase)
    assert_same(sd1, mean, solve_reference(weights, erase, value, erase_weights=torch.full((n,), 1 / n),
                                           preserve_cov=prior, lam=1e-3))
    assert_same(sd1, total, solve_reference(weights, erase, value, preserve_cov=prior, lam=1e-3))


def trce_rows(pipe, spec):
    prompt_pairs = pairs(spec)
    enc_m = erasekit.encode(pipe, [m for m, _ in prompt_pairs])
    enc_s = erasekit.encode(pipe, [s for _, s in prompt_pairs])
    index = torch.arange(len(prompt_pairs))
    return enc_m.embeddings[index, enc_m.eot_index].double(), enc_s.embeddings[index, enc_s.eot_index].double()


def test_trce_default_maps_context_rows_to_the_anchor_with_a_relative_prior_and_pushes_a_bare_concept(sd1, tmp_path):
    spec = resolve(["nude"], anchor="cat")
    weights = {n: w.double() for n, w in kv_weights(sd1.unet).items()}
    c2, tokens = caption_prior(sd1, caption_list(sd1, ["nude"]), str(tmp_path))
    n = len(pairs(spec))
    edit = erasekit.erase(sd1, "trce", spec, stages=1, lam=1e-3, cache_dir=str(tmp_path))
    erase, value = context_rows(sd1, ["nude"], ["cat"], TEMPLATES)
    prior = c2 * ((erase ** 2).sum() / n / c2.trace())  # trace equal to the weighted erase rows'
    assert edit.metadata["protocol"]["eta"] == 0.0  # an anchor: its rows are the targets (the authors')
    assert_same(sd1, edit, solve_reference(weights, erase, value, preserve_cov=prior, lam=1e-3,
                                           erase_weights=torch.full((len(erase),), 1 / n)))
    bare = erasekit.erase(sd1, "trce", ["nude"], stages=1, lam=1e-3, cache_dir=str(tmp_path))
    assert bare.metadata["protocol"]["eta"] == 1.0  # no anchor: pushed past the empty word's rows
    authors = erasekit.erase(sd1, "trce", ["nude"], stages=1, lam=1e-3, cache_dir=str(tmp_path), parity="authors")
    assert authors.metadata["protocol"]["eta"] == 0.0  # the authors' parity never pushes
    first = erasekit.erase(sd1, "trce", spec, stages=1, lam=1e-3, cache_dir=str(tmp_path), rows="first_eot",
                           eta=1.0)
    erase, value = trce_rows(sd1, spec)
    prior = 0.01 ** 2 / 3e4 * 30_000 * 77 / tokens * c2
    assert_same(sd1, first, solve_reference(weights, erase, value - (erase - value), preserve_cov=prior, lam=1e-3,
                                            erase_weights=torch.full((n,), 1 / n)))


@pytest.mark.parametrize("method,option", [("uce", {"parity": "theirs"}), ("uce", {"rows": "every"}),
                                           ("rece", {"parity": "paper"}), ("trce", {"weighting": "max"}),
                                           ("trce", {"rows": "all"})])
def test_unknown_parity_and_row_options_are_refused(sd1, method, option, tmp_path):
    with pytest.raises(erasekit.ErasekitError):
        erasekit.erase(sd1, method, resolve(["nude"], anchor="cat"), stages=1, cache_dir=str(tmp_path),
                       **option) if method == "trce" else erasekit.erase(sd1, method, ["nude"], **option)
