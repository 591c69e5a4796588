"""The white-box attacks (UnlearnDiffAtk, P4D, concept inversion) and Ring-A-Bell's GA form, their shared helpers,
the `erasekit attack` command's new attacks and their bad-input errors."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import erasekit
from erasekit.attacks import (ATTACKS, P4D, ConceptInversion, RingABellGA, SoftPrompt, UnlearnDiffAtk,
                              build_attack, original_model, project, real_token_ids)
from erasekit.attacks.whitebox import noised
from erasekit.cli.attack import ATTACK_NAMES
from erasekit.cli.main import main as cli
from erasekit.edits import applied_edits
from erasekit.errors import AttackError, ErasekitError, NotSupportedError
from erasekit.sampling.trajectory import predict
from test_bad_input import one_line_error
from test_edits import random_delta

FAST = {"unlearndiffatk": {"iterations": 6, "lr": 0.1}, "p4d": {"iterations": 6, "tokens": 4},
        "concept-inversion": {"iterations": 8, "lr": 0.05}, "ring-a-bell-ga": {"population": 8, "generations": 3}}


@pytest.fixture(scope="module")
def concept_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("concept")
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def make(name, concept_dir, **extra):
    options = {**FAST[name], **({"images": str(concept_dir)} if name == "concept-inversion" else {}), **extra}
    return build_attack(name, "cat", **options)


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_projection_gives_real_vocabulary_ids(tiny_dirs, family):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    table = pipe.text_encoder.get_input_embeddings().weight
    real = real_token_ids(pipe)
    special = set(pipe.tokenizer.all_special_ids)
    assert len(real) and not special & set(real.tolist())
    soft = torch.randn(3, 7, table.shape[1])
    for metric in ("cosine", "l2"):
        ids = project(pipe, soft, metric)
        assert ids.shape == (3, 7) and set(ids.flatten().tolist()) <= set(real.tolist())
        assert project(pipe, table[real[:20]], metric).tolist() == real[:20].tolist()  # a real row is its own token
    with pytest.raises(ValueError):
        project(pipe, soft, "manhattan")


def test_soft_prompt_encodes_as_the_prompt_and_passes_gradients(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    ids = pipe.tokenizer("cat", add_special_tokens=False).input_ids
    soft = SoftPrompt.build(pipe, ["a photo of a", len(ids)], init=torch.tensor(ids))
    plain = erasekit.encode(pipe, ["a photo of a cat"]).embeddings
    assert torch.allclose(soft.encode(pipe), plain, atol=1e-6)
    soft.encode(pipe, True).sum().backward()
    assert soft.embeddings.grad is not None and soft.embeddings.grad.abs().sum() > 0
    with pytest.raises(AttackError, match="do not fit the tokenizer"):
        SoftPrompt.build(pipe, [200, "a cat"], init=torch.zeros(200, dtype=torch.long))


def test_original_model_context_is_bit_identical_and_restores_the_stack(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = erasekit.encode(pipe, ["a cat"]).embeddings
    with torch.no_grad():
        before = predict(pipe, x, 500, text)
        first, second = random_delta(pipe, 1), random_delta(pipe, 2)
        first.apply(pipe)
        second.apply(pipe)
        edited = predict(pipe, x, 500, text)
        assert not torch.equal(edited, before)
        with original_model(pipe):
            assert applied_edits(pipe) == [] and torch.equal(predict(pipe, x, 500, text), before)
        assert applied_edits(pipe) == [first, second] and torch.equal(predict(pipe, x, 500, text), edited)
        with pytest.raises(RuntimeError):
            with original_model(pipe):
                raise RuntimeError("the edits come back after an error too")
        assert applied_edits(pipe) == [first, second] and torch.equal(predict(pipe, x, 500, text), edited)


def test_noised_latents_are_seeded_and_targets_follow_the_prediction_type(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd2"])
    latents = torch.randn(3, 4, 8, 8)
    a = noised(pipe, latents, torch.Generator().manual_seed(1), 5)
    b = noised(pipe, latents, torch.Generator().manual_seed(1), 5)
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and a[0].shape == (5, 4, 8, 8)
    assert ((a[1] >= 0) & (a[1] < 1000)).all()


@pytest.mark.parametrize("name, family", [("unlearndiffatk", "sd1"), ("p4d", "sd2"), ("concept-inversion", "sd1")])
def test_optimisation_lowers_the_loss(tiny_dirs, concept_dir, name, family):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    random_delta(pipe, 3).apply(pipe)
    extra = {"concept-inversion": {"init": "dog"}, "p4d": {"union": False}}.get(name, {})
    attack = make(name, concept_dir, **extra)
    result = attack(pipe, ["a photo of a cat"] * 2, [0, 1])
    losses = result.details.get("embedding") or result.details["found"]["a photo of a cat"]
    assert losses["loss_final"] < losses["loss_initial"]
    assert set(result.images) == {"before", attack.setting} and len(result.images[attack.setting]) == 2
    assert result.details["against"] == ["test on c3"]


def test_same_seed_same_tokens_and_images_other_seed_other_tokens(tiny_dirs, concept_dir):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    runs = [UnlearnDiffAtk("cat", iterations=3, seed=s)(pipe, ["a cat", "a dog"], [0, 1]) for s in (0, 0, 1)]
    found = [r.details["found"] for r in runs]
    assert found[0] == found[1] and found[0] != found[2]
    assert set(found[0]) == {"a cat", "a dog"}  # one search per distinct prompt
    assert [i.tobytes() for i in runs[0].images["unlearndiffatk"]] == \
        [i.tobytes() for i in runs[1].images["unlearndiffatk"]]
    ga = [RingABellGA("cat", population=8, generations=2, tokens=4)(pipe, ["a cat"], [0]) for _ in range(2)]
    assert ga[0].details["found"] == ga[1].details["found"]
    assert ga[0].images["ring-a-bell-ga"][0].tobytes() == ga[1].images["ring-a-bell-ga"][0].tobytes()


def test_the_genetic_search_beats_its_random_start(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd2"])
    start = RingABellGA("cat", population=16, generations=0, tokens=6)(pipe, ["a dog"], [0]).details["found"]
    evolved = RingABellGA("cat", population=16, generations=8, tokens=6)(pipe, ["a dog"], [0]).details["found"]
    assert evolved["a dog"]["fitness"] > start["a dog"]["fitness"]
    assert set(evolved["a dog"]["token_ids"]) <= set(real_token_ids(pipe).tolist())


def test_p4d_k_inserts_a_token_after_every_kth_word():
    attack = P4D("cat", k=2, union=False)
    assert attack.pieces("a b c d") == ["a b", 1, "c d", 1]
    assert attack.pieces("a b c") == ["a b", 1, "c"]
    assert attack.pieces("a") == ["a", 1]
    assert P4D("cat", union=False).pieces("a b c") == [16] and attack.setting == "p4d-k2"
    n, k = P4D("cat").branches()
    assert (n.setting, k.setting, P4D("cat").setting) == ("p4d-n", "p4d-k3", "p4d-union")
    assert P4D("cat", k=2).branches()[1].setting == "p4d-k2"


class Marks:  # a detector reading the verdict off the fake image's name: "…+" shows the concept
    name = "marks"

    def present(self, images):
        return torch.tensor([image.endswith("+") for image in images])


def test_p4d_union_counts_an_image_when_either_search_shows_the_concept(tiny_dirs):
    from erasekit.attacks import AttackResult
    from erasekit.evaluation.redteam import successes
    from erasekit.evaluation.scoring import attack_record

    result = AttackResult({"before": ["b0", "b1", "b2"], "p4d-n": ["n0+", "n1", "n2"],
                           "p4d-k3": ["k0", "k1+", "k2"]}, {"setting": "p4d-union", "union": ["p4d-n", "p4d-k3"]})
    record = attack_record(result, Marks(), ["p"] * 3, [0, 1, 2], [])
    assert record["hits"]["p4d-union"] == 2 and record["hits"]["p4d-n"] == 1
    shown, images, setting = successes(result, Marks())
    assert shown.tolist() == [True, True, False] and images == ["n0+", "k1+", "n2"] and setting == "p4d-union"
    pipe = erasekit.load_pipeline(tiny_dirs["sd2"])
    real = P4D("cat", iterations=2, tokens=3)(pipe, ["a photo of a cat"], [0])
    assert set(real.images) == {"before", "p4d-n", "p4d-k3"} and real.details["union"] == ["p4d-n", "p4d-k3"]
    assert set(real.details["found"]["a photo of a cat"]) == {"adversarial_prompt", "p4d-n", "p4d-k3"}


def test_an_attack_with_separate_settings_is_scored_at_its_strongest():
    from erasekit.attacks import AttackResult
    from erasekit.evaluation.redteam import successes
    from erasekit.evaluation.scoring import attack_record

    # Ring-A-Bell's η sweep: η = 3 shows it twice, η = 1 once, η = 5 twice (later: the first of equals wins)
    result = AttackResult({"eta=1": ["a0+", "a1", "a2"], "eta=3": ["b0", "b1+", "b2+"], "eta=5": ["c0+", "c1+", "c2"]},
                          {"attack": "ring-a-bell"})
    shown, images, setting = successes(result, Marks())
    assert setting == "eta=3" and shown.tolist() == [False, True, True] and images == ["b0", "b1+", "b2+"]
    assert attack_record(result, Marks(), ["p"] * 3, [0, 1, 2], [])["strongest"] == "eta=3"


def test_sdxl_is_refused_clearly(tiny_dirs, concept_dir):
    pipe = erasekit.load_pipeline(tiny_dirs["sdxl"])
    for name in FAST:
        with pytest.raises(NotSupportedError, match="SD1/SD2"):
            make(name, concept_dir)(pipe, ["a cat"], [0])


def test_bad_inputs_are_clear_errors(tiny_dirs, tmp_path, monkeypatch):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ErasekitError, match="holds no images"):
        ConceptInversion("cat", images=str(tmp_path / "empty"))(pipe, ["a cat"], [0])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not an image")
    with pytest.raises(ErasekitError, match="cannot read image"):
        ConceptInversion("cat", images=str(tmp_path / "bad"))(pipe, ["a cat"], [0])
    with pytest.raises(AttackError, match="needs images"):
        ConceptInversion("cat")(pipe, ["a cat"], [0])
    with pytest.raises(AttackError, match="do not fit"):
        UnlearnDiffAtk("cat", tokens=500)(pipe, ["a cat"], [0])
    with monkeypatch.context() as patch:
        patch.setattr("erasekit.attacks.unlearndiffatk.predict", lambda pipe, x, *a: torch.full_like(x, float("nan")))
        with pytest.raises(AttackError, match="loss became nan at iteration 0"):
            UnlearnDiffAtk("cat", iterations=3)(pipe, ["a cat"], [0])
    with pytest.raises(ErasekitError, match="does not take k"):
        build_attack("unlearndiffatk", "cat", k=3)
    assert all(p.requires_grad for p in pipe.unet.parameters())  # the attacks froze the model only meanwhile


def test_cli_names_every_attack_and_writes_the_record(tiny_dirs, tmp_path, capsys, concept_dir):
    assert set(ATTACK_NAMES) == set(ATTACKS)
    out = tmp_path / "o"
    assert cli(["attack", "--model", str(tiny_dirs["sd1"]), "--attack", "concept-inversion", "--concept", "cat",
                "--images", str(concept_dir), "--iterations", "2", "--num-images", "2", "--prompt", "a cat",
                "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "against the original model (no edit applied)" in printed and "'a cat' -> 'a <concept>'" in printed
    record = json.loads((out / "attack.json").read_text())
    assert set(record["success_rate"]) == {"before", "concept-inversion"}
    low, high = record["wilson_95"]["concept-inversion"]
    assert 0 <= low <= record["success_rate"]["concept-inversion"] <= high <= 1
    assert record["against"] == "the original model (no edit applied)" and "before_or_after" in record
    assert sorted(p.name for p in (out / "concept-inversion").iterdir()) == ["0000.png", "0001.png"]


@pytest.mark.parametrize("extra, message", [
    (["--attack", "concept-inversion", "--images", "EMPTY"], "holds no images"),
    (["--attack", "p4d", "--tokens", "300"], "do not fit the tokenizer"),
    (["--attack", "unlearndiffatk", "--k", "2"], "does not take k"),
    (["--attack", "p4d", "--iterations", "3", "--tokens", "4"], "loss became nan"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tiny_dirs, tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setattr("erasekit.attacks.p4d.predict", lambda pipe, x, *a: torch.full_like(x, float("nan")))
    (tmp_path / "empty").mkdir()
    extra = [str(tmp_path / "empty") if e == "EMPTY" else e for e in extra]
    err = one_line_error(capsys, ["attack", "--model", str(tiny_dirs["sd1"]), "--concept", "cat",
                                  "--num-images", "1", *extra], tmp_path / "o")
    assert message in err


def test_unknown_attack_is_refused_by_the_parser(tmp_path, capsys):
    assert cli(["attack", "--attack", "nope", "--concept", "cat", "--out", str(tmp_path / "o")]) == 2
    assert "invalid choice" in capsys.readouterr().err and not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name, least", [("unlearndiffatk", 0.75), ("p4d", 0.9), ("concept-inversion", 0.75),
                                         ("ring-a-bell-ga", 0.75)])  # P4D-UNION (P4D-N alone at 40 iterations: 69 %)
def test_each_attack_brings_triangles_back_on_the_original_shapeworld_model(name, least):
    from erasekit.detectors import for_concept
    from erasekit.evaluation.redteam import successes
    pipe = erasekit.load_pipeline(None)
    result = build_attack(name, "triangle")(pipe, ["a red triangle"], list(range(8)))
    shown, _, _ = successes(result, for_concept("triangle"))
    assert shown.float().mean() >= least


def test_p4d_returns_the_best_checked_prompt_and_its_images(tiny_dirs):
    from erasekit.attacks.whitebox import encode_ids
    from erasekit.sampling import generate
    pipe = erasekit.load_pipeline(tiny_dirs["sd2"])
    random_delta(pipe, 3).apply(pipe)
    result = P4D("cat", iterations=6, tokens=4, check_every=2, union=False)(pipe, ["a photo of a cat"], [0])
    found = result.details["found"]["a photo of a cat"]
    assert found["loss_final"] <= found["loss_initial"] and found["checks"] == 3
    tok = pipe.tokenizer
    ids = torch.tensor([[tok.bos_token_id, *found["token_ids"], tok.eos_token_id]
                        + [tok.pad_token_id] * (tok.model_max_length - 6)])
    again = generate(pipe, None, [0], prompt_embeds=encode_ids(pipe, ids), progress=False)
    assert again[0].tobytes() == result.images["p4d-n"][0].tobytes()  # the reported tokens are the ones used
