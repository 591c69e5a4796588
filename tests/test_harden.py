"""Hardening (red-team in the loop): the row alignment, the loop on a tiny SD1 model (one WeightDelta that applies
and removes exactly, with its history), the floor, bad input (API and CLI), and on ShapeWorld that hardening a UCE
edit lowers concept inversion's success on fresh seeds."""
import json

import pytest
import torch

import erasekit
from erasekit.attacks.whitebox import encode_ids
from erasekit.closed_form.rows import adversarial_rows
from erasekit.cli.main import main as cli
from erasekit.concepts import preset, resolve
from erasekit.detectors import Detector
from erasekit.edits import WeightDelta
from erasekit.errors import ErasekitError, NotSupportedError
from erasekit.harden.probe import Adversarial
from erasekit.harden.rows import anchor_ids, erase_rows, free_runs_replaced
from erasekit.models import kv_weights

FAST = {"unlearndiffatk": {"iterations": 2, "tokens": 2, "concept_images": 1, "batch": 1},
        "p4d": {"iterations": 2, "tokens": 2, "trajectories": 1, "check_every": 1}}


def always(flag: bool) -> Detector:
    """A detector that sees the concept in every image (or in none)."""
    return Detector("always" if flag else "never", lambda images: torch.full((len(images),), float(flag)))


@pytest.fixture
def sd1(tiny_dirs):
    return erasekit.load_pipeline(tiny_dirs["sd1"])


@pytest.fixture
def base(sd1):
    return erasekit.erase(sd1, "uce", ["cat"], anchor="dog")


def tiny_harden(pipe, edit, rounds=2, detector=True, preservation=lambda pipe: 1.0, attacks=("unlearndiffatk",),
                **options):
    return erasekit.harden(pipe, edit, attacks, rounds, detector=always(detector), preservation=preservation,
                           prompts=["a cat", "a red cat"], images=2,
                           attack_options={a: FAST[a] for a in attacks}, **options)


def test_adversarial_rows_map_prompt_tokens_to_theirs_and_free_tokens_to_the_row_before():
    adversarial = torch.arange(8.0)[:, None].repeat(1, 3) + 100   # row j holds 100 + j
    reference = torch.arange(8.0)[:, None].repeat(1, 3)           # row j holds j
    erase, value = adversarial_rows(adversarial, reference, free=[2, 3, 5])
    assert erase[:, 0].tolist() == [102, 103, 104, 105, 106, 107]
    # ids [s, w, F, F, w, F, e, p] → reference [s, w, w, e, p, p, p, p]: free rows take the row before
    assert value[:, 0].tolist() == [1, 1, 2, 2, 3, 4]


def test_adversarial_tokens_that_are_the_whole_prompt_map_to_the_anchor(sd1):
    adversarial = torch.arange(8.0)[:, None].repeat(1, 3) + 100
    reference = torch.arange(8.0)[:, None].repeat(1, 3)
    # ids [s, w, F, F, w, F, e, p] → reference [s, w, A, w, A, e, p, p]: a free run maps to its anchor row
    _, value = adversarial_rows(adversarial, reference, free=[2, 3, 5], anchor=1)
    assert value[:, 0].tolist() == [2, 2, 3, 4, 5, 6]
    assert free_runs_replaced([0, 1, 9, 9, 2, 9, 3, 4], [2, 3, 5], [7, 8], pad=4) == [0, 1, 7, 8, 2, 7, 8, 3]
    assert free_runs_replaced([0, 1, 9, 9, 2, 9, 3, 4], [2, 3, 5], [], pad=4) == [0, 1, 2, 3, 4, 4, 4, 4]
    spec = resolve(["cat"], anchor="dog")
    ids = sd1.tokenizer("a red cat").input_ids
    words = list(range(1, len(ids) - 1))
    dog = sd1.tokenizer("dog", add_special_tokens=False).input_ids
    # adversarial tokens that are the whole prompt (P4D-N's) map to the anchor, not to the empty prompt …
    assert anchor_ids(sd1, spec, Adversarial(None, ids, words)) == dog
    # … tokens beside the prompt's own words (a word learned in the concept's place, a prefix) to those words
    assert anchor_ids(sd1, spec, Adversarial(None, ids, [words[-1]])) == []
    assert anchor_ids(sd1, spec, Adversarial(None, ids, [1])) == []
    assert anchor_ids(sd1, resolve(["cat"], anchor=""), Adversarial(None, ids, words)) == []
    alone = Adversarial(encode_ids(sd1, torch.tensor([ids]))[0], ids, words)
    (erase, plain), (same, anchored) = (erase_rows(sd1, [alone], spec, anchored=a) for a in (False, True))
    assert torch.equal(erase, same) and not torch.allclose(plain, anchored)  # opt-in (HardenConfig.anchor_alone)


def test_harden_returns_one_weight_delta_that_applies_and_removes_exactly(sd1, base, tmp_path):
    original = {n: w.clone() for n, w in kv_weights(sd1.unet).items()}
    hardened = tiny_harden(sd1, base, rounds=2, attacks=("unlearndiffatk", "p4d"))
    assert isinstance(hardened, WeightDelta) and hardened.method == "uce"
    record = hardened.metadata["protocol"]["hardening"]
    assert [h["round"] for h in record["rounds"]] == [0, 1, 2] and record["kept_round"] == 2
    assert set(record["rounds"][1]["success"]) == {"unlearndiffatk", "p4d"}
    assert all(h["image_seeds"][0] >= 100_000 for h in record["rounds"])  # never the reporting seeds 0 … n − 1
    assert record["rows_erased"] > 0
    hardened.apply(sd1)
    edited = {n: w.clone() for n, w in kv_weights(sd1.unet).items()}
    hardened.remove(sd1)
    for name, w in kv_weights(sd1.unet).items():
        assert torch.equal(w, original[name])  # bit-exact removal
    base.apply(sd1)
    base_only = {n: w.clone() for n, w in kv_weights(sd1.unet).items()}
    base.remove(sd1)
    assert any(not torch.allclose(edited[n], base_only[n], atol=1e-6) for n in edited)  # the hardening is in it
    expected = {n: original[n].double() + hardened.delta(n).double() for n in original}
    assert all(torch.allclose(edited[n].double(), expected[n], atol=1e-5) for n in original)
    hardened.save(tmp_path / "h")
    again = erasekit.load_edit(tmp_path / "h")
    assert again.metadata["protocol"]["hardening"]["rounds"] == json.loads(json.dumps(record["rounds"]))


def test_harden_keeps_the_round_before_when_preservation_falls_under_the_floor(sd1, base):
    scores = iter([0.9, 0.5, 0.5])  # round 0, then round 1 loses 40 points, and again with the gentler push
    hardened = tiny_harden(sd1, base, rounds=3, preservation=lambda pipe: next(scores))
    record = hardened.metadata["protocol"]["hardening"]
    assert [(h["round"], h["eta"], h["accepted"]) for h in record["rounds"]] == [
        (0, None, True), (1, 1.0, False), (1, 0.0, False)]
    assert record["kept_round"] == 0 and "floor" in record["stopped"]
    assert all(torch.equal(hardened.delta(n), base.delta(n)) for n in base.param_names)


def test_a_round_that_loses_the_benign_content_is_refused_like_one_under_the_preservation_floor(sd1, base):
    """Preservation held, but the target prompts' other content (`benign`) falls 40 points: both pushes refused,
    the base edit kept; the benign share is in the history. Without a benign check nothing is recorded for it."""
    kept = iter([0.9, 0.5, 0.5])
    record = tiny_harden(sd1, base, rounds=2, benign=lambda pipe: next(kept)).metadata["protocol"]["hardening"]
    assert [(h["round"], h["accepted"], h["benign"]) for h in record["rounds"]] == [
        (0, True, 0.9), (1, False, 0.5), (1, False, 0.5)]
    assert record["kept_round"] == 0 and "benign content under its floor" in record["stopped"]
    assert record["benign_floor"] == pytest.approx(0.85)
    kept = iter([0.9, 0.88])
    record = tiny_harden(sd1, base, rounds=1, benign=lambda pipe: next(kept)).metadata["protocol"]["hardening"]
    assert record["kept_round"] == 1
    assert tiny_harden(sd1, base, rounds=1).metadata["protocol"]["hardening"]["rounds"][1]["benign"] is None


def test_a_round_under_the_floor_is_retried_with_the_gentler_push(sd1, base):
    """η = 1 breaks preservation, η = 0 keeps it: the round is kept with η = 0, whose values are the reference
    rows themselves (a different delta from η = 1's); with no backoff the loop stops instead."""
    scores = iter([0.9, 0.5, 0.9])
    hardened = tiny_harden(sd1, base, rounds=1, preservation=lambda pipe: next(scores))
    record = hardened.metadata["protocol"]["hardening"]
    assert [(h["eta"], h["accepted"]) for h in record["rounds"][1:]] == [(1.0, False), (0.0, True)]
    assert record["kept_round"] == 1
    pushed = tiny_harden(sd1, base, rounds=1, backoff=())
    assert any(not torch.allclose(hardened.delta(n), pushed.delta(n)) for n in hardened.param_names)
    scores = iter([0.9, 0.5])
    record = tiny_harden(sd1, base, rounds=1, backoff=(), preservation=lambda pipe: next(scores)
                         ).metadata["protocol"]["hardening"]
    assert len(record["rounds"]) == 2 and record["kept_round"] == 0


def test_each_restart_attacks_on_seeds_of_its_own_and_its_finds_are_erased(sd1, base):
    """restarts=2: two runs per attack per round, on two attack seeds and disjoint image seeds; both runs' hits are
    pooled and both runs' adversarial inputs erased (twice the rows of one run: the detector sees every image)."""
    once = tiny_harden(sd1, base, rounds=1).metadata["protocol"]["hardening"]["rounds"]
    twice = tiny_harden(sd1, base, rounds=1, restarts=2).metadata["protocol"]["hardening"]["rounds"]
    assert [h["attack_seeds"] for h in once] == [[1000], [1001]]
    assert [h["attack_seeds"] for h in twice] == [[1000, 1001], [1002, 1003]]
    assert [h["image_seeds"] for h in twice] == [[100_000, 100_003], [100_004, 100_007]]  # 2 images a run
    assert twice[0]["hits"]["unlearndiffatk"] == [4, 4] and once[0]["hits"]["unlearndiffatk"] == [2, 2]
    assert twice[1]["rows_erased"] == 2 * once[1]["rows_erased"] > 0
    with pytest.raises(ErasekitError, match="restarts must be"):
        tiny_harden(sd1, base, restarts=0)


def test_backoff_must_be_gentler_than_eta(sd1, base):
    with pytest.raises(ErasekitError, match="backoff"):
        tiny_harden(sd1, base, backoff=(1.5,))


def test_harden_stops_when_every_attack_is_under_the_target_by_its_interval_or_nothing_is_found(sd1, base):
    record = tiny_harden(sd1, base, rounds=3, detector=False).metadata["protocol"]["hardening"]
    assert record["kept_round"] == 0 and len(record["rounds"]) == 1 and "found" in record["stopped"]
    record = tiny_harden(sd1, base, rounds=3, detector=False, target=0.7).metadata["protocol"]["hardening"]
    assert len(record["rounds"]) == 1 and "target" in record["stopped"]  # 0/2: 95 % interval [0, 65.8 %]
    first = Detector("first", lambda images: (torch.arange(len(images)) == 0).float())
    record = erasekit.harden(sd1, base, ("unlearndiffatk",), 1, detector=first, preservation=lambda pipe: 1.0,
                             prompts=["a cat"], images=2, target=0.6, attack_options={"unlearndiffatk": FAST[
                                 "unlearndiffatk"]}).metadata["protocol"]["hardening"]
    assert record["rounds"][0]["success"]["unlearndiffatk"] == 0.5  # under the target, not by the interval:
    assert len(record["rounds"]) == 2 and record["rounds"][1]["rows_erased"] > 0  # its find is erased


@pytest.mark.parametrize("attacks, rounds, message", [
    (["nonsense"], 1, "unknown attack"),
    (["ring-a-bell"], 1, "finds no adversarial tokens"),
    (["unlearndiffatk"], 0, "rounds must be"),
])
def test_harden_refuses_bad_input(sd1, base, attacks, rounds, message):
    with pytest.raises(ErasekitError, match=message):
        erasekit.harden(sd1, base, attacks, rounds)


def test_harden_refuses_edits_that_are_not_weight_deltas_and_closed_form_steps_on_fine_tuned_ones(sd1, base):
    sld = erasekit.erase(sd1, "sld", ["cat"])
    with pytest.raises(NotSupportedError, match="sampling_time edit.*not supported yet"):
        erasekit.harden(sd1, sld, ["unlearndiffatk"], 1)
    tuned = WeightDelta(base.tensors, method="esd-x", concepts=["cat"], config=base.metadata["config"])
    with pytest.raises(ErasekitError, match="fine-tuning.*step='tune'"):
        erasekit.harden(sd1, tuned, ["unlearndiffatk"], 1, step="closed-form")
    with pytest.raises(ErasekitError, match="step must be"):
        erasekit.harden(sd1, tuned, ["unlearndiffatk"], 1, step="sideways")
    for bad in ({"stpes": 3}, {"lora_rank": 4}, {"lam_uncond": -1.0}):
        with pytest.raises(ErasekitError, match="tuning options"):
            erasekit.harden(sd1, tuned, ["unlearndiffatk"], 1, tuning=bad)


def test_a_fine_tuned_edit_is_hardened_by_fine_tuning_beyond_the_k_v(sd1, tmp_path):
    """An ESD-x edit is trained further on what the attacks found (all of cross-attention, its queries and output
    included), by the current model; one WeightDelta that applies and removes exactly and reproduces from its
    seeds. The same step hardens a closed-form edit when asked."""
    esd = erasekit.erase(sd1, "esd-x", ["cat"], steps=2, sample_steps=2, lr=1e-3)
    before = {n: w.detach().clone() for n, w in sd1.unet.named_parameters()}
    tuning = {"steps": 2, "sample_steps": 2, "pool_seeds": 1}
    hardened = tiny_harden(sd1, esd, rounds=1, tuning=tuning)
    assert hardened.method == "esd-x" and set(hardened.param_names) == set(esd.param_names)
    record = hardened.metadata["protocol"]["hardening"]
    assert record["config"]["step"] == "tune" and record["kept_round"] == 1 and record["rows_erased"] > 0
    moved = [n for n in esd.param_names if not torch.allclose(hardened.delta(n), esd.delta(n))]
    assert any(".to_q." in n for n in moved) and any(".to_out." in n for n in moved)
    hardened.apply(sd1)
    hardened.remove(sd1)
    assert all(torch.equal(w, before[n]) for n, w in sd1.unet.named_parameters())
    again = tiny_harden(sd1, esd, rounds=1, tuning=tuning)
    assert all(torch.equal(again.delta(n), hardened.delta(n)) for n in hardened.param_names)
    uce = erasekit.erase(sd1, "uce", ["cat"], anchor="dog")
    tuned = tiny_harden(sd1, uce, rounds=1, step="tune", tuning=tuning)
    assert tuned.metadata["protocol"]["hardening"]["kept_round"] == 1
    assert any(".to_q." in n for n in tuned.param_names) and not any(".to_q." in n for n in uce.param_names)


def test_the_tuning_step_can_hold_the_held_prompts_on_their_own_trajectories(sd1):
    """`preserve_latents="own"`: the held predictions are taken at x_t from the held prompts' own trajectories, not
    the adversarial inputs' — another training signal, so other deltas; an unknown value is refused."""
    esd = erasekit.erase(sd1, "esd-x", ["cat"], steps=2, sample_steps=2, lr=1e-3)
    tuning = {"steps": 2, "sample_steps": 2, "pool_seeds": 1}
    theirs = tiny_harden(sd1, esd, rounds=1, tuning=tuning)
    own = tiny_harden(sd1, esd, rounds=1, tuning={**tuning, "preserve_latents": "own"})
    assert own.metadata["protocol"]["hardening"]["config"]["tuning"]["preserve_latents"] == "own"
    assert any(not torch.allclose(own.delta(n), theirs.delta(n)) for n in own.param_names)
    with pytest.raises(ErasekitError, match="tuning options.*preserve_latents"):
        tiny_harden(sd1, esd, rounds=1, tuning={"preserve_latents": "nowhere"})


def test_both_steps_solve_the_rows_then_fine_tune_on_top(sd1, base):
    """`step="both"`: each round the closed form first (its K/V the closed-form round's), then fine-tuning from
    there (queries and outputs move too, the K/V move further); two rounds sum into one edit that removes exactly;
    refused on a fine-tuned edit, which has no closed form."""
    tuning = {"steps": 2, "sample_steps": 2, "pool_seeds": 1}
    closed = tiny_harden(sd1, base, rounds=1, step="closed-form")
    both = tiny_harden(sd1, base, rounds=1, step="both", tuning=tuning)
    assert both.metadata["protocol"]["hardening"]["config"]["step"] == "both"
    assert any(".to_q." in n for n in both.param_names) and not any(".to_q." in n for n in closed.param_names)
    kv = [n for n in closed.param_names if ".to_k." in n or ".to_v." in n]
    assert kv and not any(torch.allclose(both.delta(n), closed.delta(n)) for n in kv)
    before = {n: w.detach().clone() for n, w in sd1.unet.named_parameters()}
    twice = tiny_harden(sd1, base, rounds=2, step="both", tuning=tuning)
    assert [h["round"] for h in twice.metadata["protocol"]["hardening"]["rounds"]] == [0, 1, 2]
    assert not torch.allclose(twice.delta(kv[0]), both.delta(kv[0]))
    twice.apply(sd1)
    twice.remove(sd1)
    assert all(torch.equal(w, before[n]) for n, w in sd1.unet.named_parameters())
    tuned = WeightDelta(base.tensors, method="esd-x", concepts=["cat"], config=base.metadata["config"])
    with pytest.raises(ErasekitError, match="fine-tuning.*step='tune'"):
        erasekit.harden(sd1, tuned, ["unlearndiffatk"], 1, step="both")


def test_the_cli_offers_the_steps_hardening_knows():
    from erasekit.cli.harden import STEPS as CLI_STEPS
    from erasekit.harden.config import STEPS
    assert CLI_STEPS == STEPS


def test_a_two_stage_trce_edit_is_hardened_with_its_second_stage_kept(sd1, tmp_path):
    two = erasekit.erase(sd1, "trce", ["cat"], anchor="dog", lam=1e-3, cache_dir=str(tmp_path), steps=2,
                         sample_steps=2, lr=1e-3)
    hardened = tiny_harden(sd1, two, rounds=1)
    assert hardened.metadata["protocol"]["hardening"]["rows_erased"] > 0
    steered = [n for n in two.param_names if ".attn1." in n or ".attn2.to_q." in n]
    assert steered and set(hardened.param_names) == set(two.param_names)
    for name in two.param_names:
        same = torch.allclose(hardened.delta(name), two.delta(name))
        assert same == (name in steered), name  # the second stage as it was; the K/V moved


def test_cli_harden_bad_input_is_one_line_and_writes_nothing(tiny_dirs, sd1, base, tmp_path, capsys):
    base.save(tmp_path / "edit")
    out = tmp_path / "out"
    common = ["harden", "--model", str(tiny_dirs["sd1"]), "--edit", str(tmp_path / "edit"), "--out", str(out)]
    for extra, message in ((["--attack", "nonsense"], "unknown attack"), (["--rounds", "0"], "rounds must be")):
        assert cli(common + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and not out.exists()
    out.mkdir()
    assert cli(common) == 2 and "already exists" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_cli_harden_writes_one_edit_with_its_history_plot(tiny_dirs, base, tmp_path, monkeypatch, capsys):
    from erasekit.harden import loop, probe
    # the tiny model has no ShapeWorld concept: a detector that always fires, constant preservation and benign
    # content instead
    monkeypatch.setattr(loop, "default_judges", lambda concept, config, d, p, b: (
        always(True), lambda pipe: 1.0, lambda pipe: 0.75))
    monkeypatch.setattr(probe, "attack_prompts", lambda concept, n: ["a cat"])
    base.save(tmp_path / "edit")
    out = tmp_path / "out"
    assert cli(["harden", "--model", str(tiny_dirs["sd1"]), "--edit", str(tmp_path / "edit"), "--attack",
                "unlearndiffatk", "--rounds", "1", "--images", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kept round 1" in printed and "benign kept 75.0%" in printed
    hardened = erasekit.load_edit(out)
    assert len(hardened.metadata["protocol"]["hardening"]["rounds"]) == 2
    assert (out / "history.png").stat().st_size > 0


@pytest.mark.slow
def test_hardening_uce_lowers_concept_inversion_on_fresh_seeds():
    """ShapeWorld, the triangle: UCE, then hardened against concept inversion; a fresh concept-inversion run
    (attack seed 0, image seeds 0–31, which the loop never uses) succeeds less often after."""
    from erasekit.evaluation.redteam import attack_once
    torch.manual_seed(0)
    pipe = erasekit.load_pipeline()
    edit = erasekit.erase(pipe, "uce", preset("shapeworld/triangle"))
    hardened = erasekit.harden(pipe, edit, ["concept-inversion"], rounds=2)

    def success(e):
        e.apply(pipe)
        try:
            return attack_once(pipe, "concept-inversion", "triangle", 32).hits
        finally:
            e.remove(pipe)
    before, after = success(edit), success(hardened)
    assert before >= 4, f"the base UCE edit should still leak under concept inversion ({before}/32)"
    assert after < before / 2, (before, after)
