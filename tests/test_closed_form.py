import pytest
import torch

import erasekit
from erasekit.concepts import ConceptError, preset, resolve
from erasekit.closed_form.directions import discriminative_directions, second_moment
from erasekit.closed_form.rows import aligned_rows
from erasekit.closed_form.solver import SolverError, solve, solve_reference
from erasekit.methods import make_config
from erasekit.models import kv_weights
from erasekit.methods.rece import derive_embedding
from erasekit.methods.trce import eot_rows, pairs


def random_problem(seed=0, d=24, m=4):
    g = torch.Generator().manual_seed(seed)
    weights = {f"w{i}": torch.randn(o, d, generator=g, dtype=torch.float64) for i, o in enumerate((8, 16, 24))}
    x = torch.randn(40, d, generator=g, dtype=torch.float64)
    return weights, torch.randn(m, d, generator=g, dtype=torch.float64), \
        torch.randn(m, d, generator=g, dtype=torch.float64), 0.1 * x.T @ x


@pytest.mark.parametrize("kwargs", [{"lam": 0.5}, {"lam": 0.1, "with_prior": True},
                                    {"lam": 0.0, "with_prior": True, "weighted": True}])
def test_batched_solver_equals_per_matrix_inverse(kwargs):
    weights, erase_rows, value_rows, prior = random_problem()
    options = {"lam": kwargs["lam"]}
    if kwargs.get("with_prior"):
        options["preserve_cov"] = prior
    if kwargs.get("weighted"):
        options["erase_weights"] = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    fast, slow = solve(weights, erase_rows, value_rows, **options), solve_reference(weights, erase_rows, value_rows,
                                                                                      **options)
    for name in weights:
        torch.testing.assert_close(fast[name].full(), slow[name], rtol=1e-9, atol=1e-10)
        assert torch.linalg.matrix_rank(fast[name].full()) <= len(erase_rows)


def test_erase_rows_land_on_their_values_when_unregularised():
    weights, erase_rows, value_rows, _ = random_problem()
    updates = solve(weights, erase_rows, value_rows, lam=1e-9)
    for name, w in weights.items():
        torch.testing.assert_close((w + updates[name].full()) @ erase_rows.T, w @ value_rows.T, rtol=1e-5, atol=1e-5)


def test_singular_and_nonfinite_systems_are_refused():
    weights, erase_rows, value_rows, _ = random_problem()
    with pytest.raises(SolverError, match="singular"):
        solve(weights, erase_rows, value_rows, lam=0.0)
    bad = erase_rows.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(SolverError, match="NaN"):
        solve(weights, bad, value_rows, lam=0.5)


def test_discriminative_directions_find_where_one_set_of_rows_lives_and_the_other_does_not():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(200, 6, generator=g) * torch.tensor([3.0, 3.0, 0.1, 0.1, 0.1, 0.1])  # energy in 0 and 1
    others = torch.randn(300, 6, generator=g) * torch.tensor([0.01, 3.0, 3.0, 1.0, 1.0, 1.0])  # in all but 0
    found = discriminative_directions(second_moment(rows), second_moment(others), 2)
    assert found.shape == (6, 2) and torch.allclose(found.norm(dim=0), torch.ones(2))
    assert found[0, 0].abs() > 0.99  # the strongest is the direction only `rows` use
    energy = lambda x, d: (x @ d).pow(2).mean().item()
    assert energy(rows, found[:, 0]) > 100 * energy(others, found[:, 0])
    with pytest.raises(ValueError, match="dims"):
        discriminative_directions(second_moment(rows), second_moment(others), 0)


def test_compact_form_is_exact():
    weights, erase_rows, value_rows, _ = random_problem()
    update = solve(weights, erase_rows, value_rows)["w2"]
    up, down = update.compact()
    torch.testing.assert_close((up.double() @ down.double()), update.full(), rtol=1e-5, atol=1e-6)


@pytest.fixture
def sd1(tiny_dirs):
    return erasekit.load_pipeline(tiny_dirs["sd1"])


def test_uce_maps_target_rows_to_anchor_rows_and_keeps_preserved(sd1):
    spec = resolve(["nude"], anchor="cat", preserve=["dog"])
    erase_rows, value_rows = aligned_rows(sd1, ["nude"], ["cat"], "last")
    kept, _ = aligned_rows(sd1, ["dog"], ["dog"], "last")
    before = {n: w.double().clone() for n, w in kv_weights(sd1.unet).items()}
    edit = erasekit.erase(sd1, "uce", spec, lam=1e-4, preserve_scale=100.0, parity="authors")
    edit.apply(sd1)
    after = {n: w.double() for n, w in kv_weights(sd1.unet).items()}
    for name in before:
        gap_before = (before[name] @ erase_rows.T - before[name] @ value_rows.T).norm()
        gap_after = (after[name] @ erase_rows.T - before[name] @ value_rows.T).norm()
        assert gap_after < 0.05 * gap_before, name
        drift = (after[name] @ kept.T - before[name] @ kept.T).norm() / (before[name] @ kept.T).norm()
        assert drift < 0.05, name
    edit.remove(sd1)


def test_uce_to_end_rows_cover_the_rest_of_the_sequence(sd1):
    erase_rows, value_rows = aligned_rows(sd1, ["nude"], [""], "to_end")
    length = sd1.tokenizer.model_max_length
    assert erase_rows.shape[0] == length - 1  # from the word (index 1) to the end; anchor "" starts at SoT


def test_rece_derived_embedding_inverts_an_unedited_model(sd1):
    weights = {n: w.double() for n, w in kv_weights(sd1.unet).items()}
    target = torch.randn(3, next(iter(weights.values())).shape[1], dtype=torch.float64)
    torch.testing.assert_close(derive_embedding(weights, weights, target, lam_reg=1e-8), target, rtol=1e-4, atol=1e-4)


def test_rece_keeps_the_epoch_the_validator_prefers(sd1):
    scores = iter([0.6, 0.5, 0.1, 0.3])  # the start (epoch 0), then epochs 1-3
    seen = []

    def validator(pipe):
        seen.append(len(erasekit.applied_edits(pipe)))
        return next(scores)

    edit = erasekit.erase(sd1, "rece", ["nude"], epochs=3, validator=validator)
    assert edit.metadata["protocol"]["chosen_epoch"] == 2
    assert [e["detection"] for e in edit.metadata["protocol"]["epochs"]] == [0.6, 0.5, 0.1, 0.3]
    assert seen == [1, 1, 1, 1] and erasekit.applied_edits(sd1) == []  # each candidate applied, then removed
    assert edit.metadata["config"]["validator"] == "validator"


def test_rece_epochs_reduce_the_derived_concept_response(sd1):
    one = erasekit.erase(sd1, "rece", ["nude"], epochs=1)
    three = erasekit.erase(sd1, "rece", ["nude"], epochs=3)
    assert one.metadata["protocol"]["chosen_epoch"] == 1 and three.metadata["protocol"]["chosen_epoch"] == 3
    original = {n: w.double().clone() for n, w in kv_weights(sd1.unet).items()}
    concept = erasekit.encode(sd1, ["nude"]).embeddings[0].double()

    def regeneration_error(edit):
        edit.apply(sd1)
        current = {n: w.double().clone() for n, w in kv_weights(sd1.unet).items()}
        edit.remove(sd1)
        derived = derive_embedding(current, original, concept, lam_reg=0.1)
        return sum(((current[n] @ derived.T) - original[n] @ concept.T).norm() for n in current)

    assert regeneration_error(three) > regeneration_error(one)  # harder to regenerate after more epochs


def test_trce_uses_300_pairs_for_nudity_and_first_eot_rows(sd1, tmp_path):
    spec = preset("nudity")
    assert len(spec.pairs["malicious"]) == 20 and len(pairs(spec)) == 300
    prompts = ["a xylophone cat", "a photo of a red dog"]
    rows = eot_rows(sd1, prompts, wordcount=False)
    enc = erasekit.encode(sd1, prompts)
    torch.testing.assert_close(rows, enc.embeddings[torch.arange(2), enc.eot_index].double())
    # the official code's word count is wrong whenever a word is several tokens ("xylophone" is, here)
    assert not torch.equal(eot_rows(sd1, prompts, wordcount=True), rows)


def test_trce_prior_is_cached_per_model(sd1, tmp_path):
    edit = erasekit.erase(sd1, "trce", ["nude"], anchor="cat", cache_dir=str(tmp_path), lam=1e-3, stages=1)
    cached = list(tmp_path.glob("prior-*.safetensors"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = erasekit.erase(sd1, "trce", ["nude"], anchor="cat", cache_dir=str(tmp_path), lam=1e-3, stages=1)
    assert cached[0].stat().st_mtime_ns == stamp
    for name in edit.param_names:
        torch.testing.assert_close(edit.delta(name), again.delta(name))
    assert edit.metadata["protocol"]["prompt_pairs"] == 15


def test_trce_refuses_a_singular_system_without_regularisation(sd1, tmp_path):
    with pytest.raises(SolverError):  # a random-init final LayerNorm centres every row: Σ e eᵀ is singular
        erasekit.erase(sd1, "trce", ["nude"], cache_dir=str(tmp_path), stages=1)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_methods_run_on_every_family(tiny_dirs, family, tmp_path):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    before = {n: w.clone() for n, w in kv_weights(pipe.unet).items()}
    closed_form_trce = {"cache_dir": str(tmp_path), "stages": 1, "lam": 1e-3}
    for method, options in (("uce", {}), ("rece", {"epochs": 1}), ("trce", closed_form_trce)):
        edit = erasekit.erase(pipe, method, ["nude"], **options)
        assert set(edit.param_names) == {"unet." + n for n in before}
        edit.apply(pipe)
        assert any(not torch.equal(w, before[n]) for n, w in kv_weights(pipe.unet).items())
        edit.remove(pipe)


def test_bad_concepts_and_methods(sd1, tmp_path):
    with pytest.raises(erasekit.ErasekitError, match="unknown method"):
        erasekit.erase(sd1, "nope", ["cat"])
    with pytest.raises(ConceptError, match="unknown concept preset"):
        erasekit.erase(sd1, "uce", preset="nopreset")
    with pytest.raises(ConceptError, match="unknown ShapeWorld concept"):
        preset("shapeworld/hexagon")
    with pytest.raises(ConceptError, match="non-empty target"):
        erasekit.erase(sd1, "uce", ["\u3000"])  # an ideographic space: the tokenizer yields no token for it
    with pytest.raises(ConceptError, match="longer than the target"):
        erasekit.erase(sd1, "uce", ["cat"], anchor="red nude dog", parity="authors")
    erasekit.erase(sd1, "uce", ["cat"], anchor="red nude dog")  # context rows align any anchor
    with pytest.raises(erasekit.ErasekitError, match="no option"):
        make_config("uce", epochs=3)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("targets: [nude]\nanchor: cat\npreserve: [dog]\nfoo: 1\n")
    with pytest.raises(ConceptError, match="unknown keys"):
        erasekit.erase(sd1, "uce", spec_file=str(spec_file))


def test_spec_file_and_shapeworld_presets(tmp_path):
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"targets": ["nude", "cat"], "anchor": "", "preserve": ["dog"]}')
    spec = resolve(spec_file=str(spec_file))
    assert spec.targets == ["nude", "cat"] and spec.anchors == ["", ""] and spec.preserve == ["dog"]
    triangle = preset("shapeworld/triangle")
    assert triangle.anchors == ["diamond"] and "triangle" not in triangle.preserve and len(triangle.preserve) == 5
    artist = preset("shapeworld/tobias renn")
    assert artist.targets == ["tobias renn"] and "ines kovac" in artist.preserve
    assert resolve("nudity").anchors == [""]


def test_rece_defaults_follow_the_concept_kind(sd1):
    plain = erasekit.erase(sd1, "rece", resolve(["nude"], anchor=""), epochs=None)
    assert plain.metadata["config"]["epochs"] == 1 and plain.metadata["config"]["lam_reg"] == 0.1  # object kind
    nudity = erasekit.erase(sd1, "rece", ["nudity"])
    assert nudity.metadata["config"]["epochs"] == 3 and nudity.metadata["config"]["lam_reg"] == 0.1
    assert preset("artists").kind == "style" and preset("shapeworld/tobias renn").kind == "style"
    artist = erasekit.erase(sd1, "rece", ["nude"], anchor="", lam_reg=1e-3, epochs=2)
    assert artist.metadata["config"]["epochs"] == 2 and artist.metadata["config"]["lam_reg"] == 1e-3


def test_rece_low_rank_epochs_equal_the_textbook_loop(sd1):
    from erasekit.methods.rece import RECEConfig, rece_updates
    originals = {n: w.double().clone() for n, w in kv_weights(sd1.unet).items()}
    g = torch.Generator().manual_seed(0)
    d = next(iter(originals.values())).shape[1]
    concept, space = torch.randn(5, d, generator=g, dtype=torch.float64), torch.randn(5, d, generator=g,
                                                                                       dtype=torch.float64)
    start = solve(originals, torch.randn(3, d, generator=g, dtype=torch.float64),
                  torch.randn(3, d, generator=g, dtype=torch.float64))
    config = RECEConfig(epochs=2, lam_reg=0.1)
    fast = list(rece_updates(originals, start, concept, space, config))[-1][1]
    total = {n: start[n].full() for n in originals}
    for _ in range(2):
        current = {n: originals[n] + total[n] for n in originals}
        derived = derive_embedding(current, originals, concept, 0.1)
        step = solve_reference(current, derived, space, preserve_cov=space.T @ space * 0.1, lam=0.1)
        total = {n: total[n] + step[n] for n in total}
    for n in originals:
        torch.testing.assert_close(fast[n].full(), total[n], rtol=1e-7, atol=1e-8)
