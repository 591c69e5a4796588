"""The fine-tuning erasers (ESD-x, ESD-u, All-but-One, TRCE's two stages) on the training core: each runs on
every family, leaves the pipeline as it found it, returns one reversible WeightDelta, reproduces from its seed and
resumes; bad settings are refused before any training."""
import numpy as np
import pytest
import torch

import erasekit
from erasekit.concepts import ConceptError
from erasekit.errors import ErasekitError
from erasekit.training import TrainingError

TINY = {"steps": 2, "sample_steps": 2, "lr": 1e-3}


def unet_state(pipe):
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def prediction(pipe, prompt="a red cat"):
    from erasekit.sampling import predict
    enc = erasekit.encode(pipe, [prompt])
    unet = pipe.unet
    x = torch.randn(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size,
                    generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return predict(pipe, x, torch.tensor(500), enc.embeddings, enc.pooled)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("method, options", [("esd-x", {}), ("esd-u", {}), ("abo", {"anchor": "dog"}),
                                             ("trce", {"anchor": "dog", "lam": 1e-3})])
def test_methods_train_on_every_family_and_leave_the_pipeline_alone(tiny_dirs, family, method, options, tmp_path):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    before, base = unet_state(pipe), prediction(pipe)
    if method == "trce":
        options = {**options, "cache_dir": str(tmp_path)}
    edit = erasekit.erase(pipe, method, ["cat"], **TINY, **options)
    after = unet_state(pipe)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(name.startswith("unet.") for name in edit.param_names)
    edit.apply(pipe)
    assert not torch.allclose(prediction(pipe), base)
    edit.remove(pipe)
    assert torch.equal(prediction(pipe), base)
    assert edit.metadata["protocol"]["last_loss"] is not None


def test_trained_selections_follow_the_authors(tiny_dirs):
    from erasekit.methods.finetune import select_parameters
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    xattn = select_parameters(pipe.unet, "xattn")
    assert xattn and all(".attn2." in n for n in xattn)
    rest = select_parameters(pipe.unet, "noxattn")
    assert not any(".attn2." in n or n.startswith(("time_embedding.", "conv_out.")) for n in rest)
    assert len(xattn) + len(rest) < len(list(pipe.unet.named_parameters()))
    steer = select_parameters(pipe.unet, "selfattn-xattn-q")
    assert steer and all(".attn1." in n or ".attn2.to_q." in n for n in steer)
    with pytest.raises(ErasekitError, match="matches no parameter"):
        select_parameters(pipe.unet, "no_such_layer")


def test_trce_holds_both_stages_and_one_stage_is_the_closed_form(tiny_dirs, tmp_path):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    options = {"anchor": "dog", "lam": 1e-3, "cache_dir": str(tmp_path)}
    one = erasekit.erase(pipe, "trce", ["cat"], stages=1, **options)
    two = erasekit.erase(pipe, "trce", ["cat"], **TINY, **options)
    assert set(one.param_names) < set(two.param_names)
    for name in one.param_names:
        torch.testing.assert_close(two.delta(name), one.delta(name))
    steered = set(two.param_names) - set(one.param_names)
    assert steered and all(".attn1." in n or ".attn2.to_q." in n for n in steered)


def test_same_seed_same_edit_and_a_killed_run_resumes(tiny_dirs, tmp_path, monkeypatch, kill_training_at):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    options = {**TINY, "steps": 8, "anchor": "dog"}
    first = erasekit.erase(pipe, "abo", ["cat"], **options)
    second = erasekit.erase(pipe, "abo", ["cat"], **options)
    assert all(torch.equal(first.delta(n), second.delta(n)) for n in first.param_names)

    kill_training_at(5)
    with pytest.raises(KeyboardInterrupt):
        erasekit.erase(pipe, "abo", ["cat"], work_dir=str(tmp_path / "run"), **options)
    monkeypatch.undo()
    assert all(torch.equal(a, b) for a, b in zip(unet_state(pipe).values(),
                                                 erasekit.load_pipeline(tiny_dirs["sd1"]).unet.state_dict().values()))
    resumed = erasekit.erase(pipe, "abo", ["cat"], work_dir=str(tmp_path / "run"), **options)
    assert resumed.metadata["protocol"]["resumed_from_step"] == 4
    assert all(torch.equal(first.delta(n), resumed.delta(n)) for n in first.param_names)
    with pytest.raises(TrainingError, match="other settings"):
        erasekit.erase(pipe, "abo", ["cat"], work_dir=str(tmp_path / "run"), **{**options, "lr": 2e-3})


def test_lora_training_exports_a_lora_plain_diffusers_loads(tiny_dirs, tmp_path):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = erasekit.erase(pipe, "abo", ["cat"], anchor="dog", lora_rank=2, **{**TINY, "steps": 3, "lr": 1e-2})
    assert any(k.startswith("up.") for k in edit.tensors) and not any(k.startswith("delta.") for k in edit.tensors)
    assert not any("lora" in n for n, _ in pipe.unet.named_parameters())  # the adapters are gone again
    edit.apply(pipe)
    ours = prediction(pipe)
    edit.remove(pipe)
    edit.export_lora(tmp_path / "lora.safetensors")
    plain = erasekit.load_pipeline(tiny_dirs["sd1"])
    plain.load_lora_weights(str(tmp_path / "lora.safetensors"))
    torch.testing.assert_close(prediction(plain), ours, rtol=1e-4, atol=1e-5)


def test_lora_runs_reproduce_from_their_seed_whatever_the_global_rng(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])

    def run(seed, global_seed):
        torch.manual_seed(global_seed)  # peft's own init draws from it
        return erasekit.erase(pipe, "esd-u", ["cat"], lora_rank=2, seed=seed, **TINY)

    first, again, other = run(0, 1), run(0, 2), run(1, 1)
    assert first.tensors.keys() == again.tensors.keys()
    assert all(torch.equal(first.tensors[k], again.tensors[k]) for k in first.tensors)
    assert any(not torch.equal(first.tensors[k], other.tensors[k]) for k in first.tensors)


@pytest.mark.parametrize("options, error, match", [
    ({"anchor": "cat"}, ConceptError, "the target itself"),
    ({"lr": 0.0}, TrainingError, "lr must be"),
    ({"lr": float("nan")}, TrainingError, "lr must be"),
    ({"steps": 0}, TrainingError, "steps must be"),
    ({"trainable": "no_such_layer"}, ErasekitError, "matches no parameter"),
    ({"loss_weighting": "snr"}, ErasekitError, "loss_weighting must be"),
    ({"pool_seeds": -1}, ErasekitError, "pool_seeds must be"),
    ({"preserve_pool_seeds": -2}, ErasekitError, "preserve_pool_seeds must be"),
    ({"step_window": (0.8, 0.2)}, ErasekitError, "step_window must be"),
    ({"sample_model": "ema"}, ErasekitError, "sample_model must be"),
    ({"sample_model": "trained", "pool_seeds": 2}, ErasekitError, "needs sample_model='frozen'"),
    ({"sample_model": "trained", "preserve_pool_seeds": 1}, ErasekitError, "preserve_pool_seeds reuses"),
])
def test_bad_settings_are_refused_before_training(tiny_dirs, tmp_path, options, error, match):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    with pytest.raises(error, match=match):
        erasekit.erase(pipe, "abo", ["cat"], work_dir=str(tmp_path / "w"), **{**TINY, **options})
    assert not (tmp_path / "w" / "checkpoint").exists()


def test_a_trajectory_pool_serves_its_own_steps_within_the_window(tiny_dirs):
    from erasekit.methods.esd import ESDXConfig
    from erasekit.methods.finetune import FineTuning, Prompts, TrajectoryPool
    from erasekit.sampling import trajectory
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    config = ESDXConfig(sample_steps=4, pool_seeds=2, batch_size=3, step_window=(0.5, 1.0))
    prompts = Prompts.encode(pipe, ["a cat", "a photo of a cat"])
    with FineTuning.of(pipe, config) as tuning:
        pool = TrajectoryPool.sample(pipe, prompts, config, tuning.frozen)
        index, x, t = pool.draw(torch.Generator().manual_seed(3), 3, config.step_window)
    k = list(pool.timesteps).index(t)
    assert k in (2, 3) and pool.latents.shape[:2] == (4, 4)
    for row, i in enumerate(index.tolist()):  # each drawn x_t is step k of one of its prompt's trajectories
        runs = [trajectory(pipe, None, [config.seed * 100_003 + i * 2 + m], steps=4, guidance=3.0, keep=[k],
                           prompt_embeds=prompts.embeddings[i:i + 1]).latents[k] for m in range(2)]
        assert any(torch.allclose(x[row:row + 1], run, atol=1e-5) for run in runs)


def test_x_t_comes_from_the_model_being_trained_when_asked(tiny_dirs):
    from erasekit.methods.esd import ESDXConfig
    from erasekit.methods.finetune import FineTuning, Prompts, latent_sampler
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    prompts = Prompts.encode(pipe, ["a cat"])
    drawn = {}
    for model in ("frozen", "trained"):
        config = ESDXConfig(sample_steps=3, step_window=(0.9, 1.0), sample_model=model)
        with FineTuning.of(pipe, config) as tuning:
            draw = latent_sampler(pipe, tuning, prompts, config)
            before = draw(torch.Generator().manual_seed(0))[1]
            with torch.no_grad():  # a training step's worth of change to the trainable weights
                for p in tuning.parameters.values():
                    p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
            drawn[model] = before, draw(torch.Generator().manual_seed(0))[1]
    torch.testing.assert_close(drawn["frozen"][0], drawn["frozen"][1])  # the original samples, whatever trained
    torch.testing.assert_close(drawn["trained"][0], drawn["frozen"][0])  # untrained: the same model
    assert not torch.allclose(drawn["trained"][1], drawn["trained"][0], atol=1e-4)  # on-policy: the new weights


@pytest.mark.parametrize("method, options", [("esd-x", {}), ("abo", {"anchor": "dog"}),
                                             ("trce", {"anchor": "dog", "lam": 1e-3})])
def test_every_fine_tuner_draws_from_the_pool_when_asked(tiny_dirs, tmp_path, monkeypatch, method, options):
    import erasekit.methods.finetune as finetune
    def fresh(*args, **kwargs):
        raise AssertionError("a fresh trajectory was sampled despite pool_seeds")
    draws, draw = [], finetune.TrajectoryPool.draw
    monkeypatch.setattr(finetune, "draw_noised_latents", fresh)
    monkeypatch.setattr(finetune.TrajectoryPool, "draw", lambda self, *a: draws.append(1) or draw(self, *a))
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    if method == "trce":
        options = {**options, "cache_dir": str(tmp_path)}
    edit = erasekit.erase(pipe, method, ["cat"], **TINY, **options, pool_seeds=1)
    assert len(draws) == TINY["steps"] * (2 if method == "trce" else 1)  # TRCE: malicious and blank x_t
    assert edit.metadata["protocol"]["last_loss"] is not None


def test_guidance_weighting_makes_the_first_esd_loss_the_square_of_one_plus_eta(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])  # before any update, prediction − target = (1 + η)(ε_c − ε_∅)
    for eta in (1.0, 0.5):
        edit = erasekit.erase(pipe, "esd-x", ["cat"], **{**TINY, "steps": 1}, eta=eta, loss_weighting="guidance",
                              pool_seeds=1)
        assert edit.metadata["protocol"]["first_loss"] == pytest.approx((1 + eta) ** 2, rel=1e-4)


def test_esd_holds_the_unconditional_prediction_when_asked(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])  # ESD's loss alone lets the empty prompt's prediction drift
    before = prediction(pipe, "")
    moved = {}
    for lam in (0.0, 10.0):
        edit = erasekit.erase(pipe, "esd-x", ["cat"], **{**TINY, "steps": 6}, lam_uncond=lam)
        edit.apply(pipe)
        moved[lam] = float((prediction(pipe, "") - before).norm())
        edit.remove(pipe)
    assert 0 < moved[10.0] < 0.5 * moved[0.0]  # measured: 0.42 against 1.52
    with pytest.raises(ErasekitError, match="lam_uncond must be"):
        erasekit.erase(pipe, "esd-u", ["cat"], **TINY, lam_uncond=float("nan"))


def test_plain_all_but_one_pushes_the_target_guidance_past_zero(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])  # before any update: guidance − wanted = (1 + η) g, ε_∅ kept
    for eta in (1.0, 0.0):  # 0: the authors' plain erasure (the guidance made to vanish)
        edit = erasekit.erase(pipe, "abo", ["cat"], anchor="", **{**TINY, "steps": 1}, eta=eta,
                              loss_weighting="guidance", pool_seeds=1)
        assert edit.metadata["protocol"]["first_loss"] == pytest.approx((1 + eta) ** 2, rel=1e-4)


@pytest.mark.parametrize("method, options", [("abo", {"anchor": "dog"}), ("esd-x", {})])
def test_fine_tuners_keep_the_preserved_concepts_when_asked(tiny_dirs, method, options):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    before = prediction(pipe, "a bird")
    moved = {}
    for lam in (0.0, 10.0):
        edit = erasekit.erase(pipe, method, ["cat"], preserve=["bird"], **{**TINY, "steps": 6}, **options,
                              lam_preserve=lam)
        edit.apply(pipe)
        moved[lam] = float((prediction(pipe, "a bird") - before).norm())
        edit.remove(pipe)
    assert 0 < moved[10.0] < 0.8 * moved[0.0]  # measured: abo 0.68, esd-x 0.28 (the captions share the term)
    with pytest.raises(ErasekitError, match="lam_preserve must be"):
        erasekit.erase(pipe, method, ["cat"], **TINY, **options, lam_preserve=-1.0)


def test_the_preservation_term_can_hold_the_preserved_prompts_on_their_own_trajectories(tiny_dirs, monkeypatch):
    """`preserve_latents="own"`: the preserved prompts are predicted at x_t from their own frozen trajectories (ESD-u
    trains weights the text does not gate), not at the target's; before any update the term is 0."""
    import erasekit.methods.finetune as finetune
    from erasekit.concepts import resolve
    from erasekit.methods.esd import ESDUConfig
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    spec = resolve(["cat"], preserve=["bird"])
    seen, predict = [], finetune.predict
    monkeypatch.setattr(finetune, "predict", lambda p, x, *a: seen.append(x) or predict(p, x, *a))
    x, t, generator = torch.zeros(1, 4, 16, 16), torch.tensor(500), torch.Generator().manual_seed(0)
    for where in ("target", "own"):
        config = ESDUConfig(**TINY, lam_preserve=1.0, preserve_latents=where, loss_weighting="guidance")
        seen.clear()
        with finetune.FineTuning.of(pipe, config) as tuning:
            loss = finetune.Preservation.of(pipe, tuning, spec, config).loss(x, t, None, generator)
        assert float(loss.detach()) == pytest.approx(0.0, abs=1e-9)
        assert all((s == 0).all() for s in seen) == (where == "target") and seen
    with pytest.raises(ErasekitError, match="preserve_latents must be"):
        erasekit.erase(pipe, "esd-u", ["cat"], **TINY, lam_preserve=1.0, preserve_latents="elsewhere")


def test_the_preserved_prompts_pool_takes_its_own_number_of_trajectories(tiny_dirs, monkeypatch):
    """`preserve_pool_seeds`: the preserved prompts (hundreds: the caption prior's) pool that many trajectories each,
    the target's prompts `pool_seeds`; None: both `pool_seeds`."""
    import erasekit.methods.finetune as finetune
    from erasekit.concepts import resolve
    from erasekit.methods.esd import ESDUConfig
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    spec = resolve(["cat"], preserve=["bird"])
    pooled, sample = [], finetune.TrajectoryPool.sample.__func__
    monkeypatch.setattr(finetune.TrajectoryPool, "sample", classmethod(
        lambda cls, pipe, prompts, config, model, **kw: pooled.append(config.pool_seeds) or
        sample(cls, pipe, prompts, config, model, **kw)))
    for own, expected in ((None, 2), (1, 1)):
        config = ESDUConfig(**TINY, lam_preserve=1.0, preserve_latents="own", pool_seeds=2,
                            preserve_pool_seeds=own)
        pooled.clear()
        with finetune.FineTuning.of(pipe, config) as tuning:
            term = finetune.Preservation.of(pipe, tuning, spec, config)
            term.loss(torch.zeros(1, 4, 16, 16), torch.tensor(500), None, torch.Generator().manual_seed(0))
        assert pooled == [expected] and term.config.pool_seeds == 2


def test_a_loss_that_becomes_nan_stops_with_a_clear_error(tiny_dirs, monkeypatch):
    import erasekit.methods.abo as abo
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    before = unet_state(pipe)
    monkeypatch.setattr(abo, "weighted_mse", lambda a, b, w: (a - b).pow(2).mean() * float("nan"))
    with pytest.raises(TrainingError, match="loss became nan"):
        erasekit.erase(pipe, "abo", ["cat"], anchor="dog", **TINY)
    assert all(torch.equal(v, before[k]) for k, v in unet_state(pipe).items())


@pytest.mark.slow
def test_all_but_one_turns_shapeworld_triangles_into_diamonds_and_purifies_images():
    from erasekit.detectors import for_concept
    from erasekit.methods.abo import purify
    from erasekit.shapeworld.domain import Scene
    from erasekit.shapeworld.render import render
    pipe = erasekit.load_pipeline()
    edit = erasekit.erase(pipe, "abo", ["triangle"], anchor="diamond", lr=1e-3, steps=60, sample_steps=10)
    prompts = ["a red triangle", "a blue yield sign on a white background", "a green trigon"] * 3
    edit.apply(pipe)
    images = erasekit.generate(pipe, prompts, list(range(9)), progress=False)
    edit.remove(pipe)
    assert for_concept("triangle").rate(images) <= 2 / 9 and for_concept("diamond").rate(images) >= 6 / 9
    real = np.stack([render(Scene("triangle", c, "solid", "white"), i) for i, c in enumerate(["red", "blue"])])
    assert for_concept("triangle").rate(real) == 1.0
    assert for_concept("triangle").rate(purify(pipe, edit, real)) == 0.0


@pytest.mark.slow
def test_two_processes_train_as_one_with_two_micro_batches(tiny_dirs, tmp_path):
    """Data-parallel: process r takes micro-batch r of each step and the gradients are averaged, so two processes
    equal one process accumulating two micro-batches (up to the order of float sums)."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "erasekit.cli.main", "erase", "--model", str(tiny_dirs["sd1"]), "--method", "abo", "--concept",
            "cat", "--anchor", "dog", "--option", "steps=3", "--option", "sample_steps=2", "--option", "lr=1e-3"]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    runs = {"double": [*launcher, *args, "--out", str(tmp_path / "double")],
            "single": [*args, "--option", "accumulation=2", "--out", str(tmp_path / "single")],
            "one": [*args, "--out", str(tmp_path / "one")]}
    for command in runs.values():
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    double, single, one = (erasekit.load_edit(tmp_path / name) for name in ("double", "single", "one"))
    for name in single.param_names:
        torch.testing.assert_close(double.delta(name), single.delta(name), rtol=1e-4, atol=1e-7)
    assert any(not torch.allclose(one.delta(n), single.delta(n)) for n in one.param_names)


def test_on_shapeworld_options_not_given_take_the_methods_shapeworld_settings(tiny_dirs, monkeypatch):
    """A new user's bare call on ShapeWorld trains on the bench's budget (the authors' SD-sized defaults erase
    nothing there in minutes), the caller's options over it; any other model keeps the authors' defaults."""
    import dataclasses

    from erasekit.methods import METHODS
    seen = []

    class Made:
        metadata = {"protocol": {}}

    for name in ("esd-x", "esd-u", "abo", "trce", "forceforget"):
        monkeypatch.setitem(METHODS, name, dataclasses.replace(
            METHODS[name], run=lambda pipe, spec, config: seen.append(config) or Made()))
    world = erasekit.load_pipeline()
    erasekit.erase(world, "esd-x", ["triangle"])
    erasekit.erase(world, "esd-x", ["tobias renn"])
    erasekit.erase(world, "esd-x", ["triangle"], lr=2e-3)
    erasekit.erase(erasekit.load_pipeline(tiny_dirs["sd1"]), "esd-x", ["cat"])
    assert [(c.lr, c.steps, c.lam_uncond) for c in seen] == [(1e-3, 100, 1.0), (7e-4, 100, 1.0), (2e-3, 100, 1.0),
                                                             (5e-5, 200, 0.0)]
    seen.clear()
    erasekit.erase(world, "esd-u", ["tobias renn"])
    erasekit.erase(world, "abo", ["triangle"])
    erasekit.erase(world, "abo", ["triangle"], anchor="diamond")
    erasekit.erase(world, "abo", preset="shapeworld/tobias renn", anchor="")
    erasekit.erase(world, "trce", ["triangle"])
    esd_u, plain, alternative, plain_style, trce = seen
    assert (esd_u.lora_rank, esd_u.steps, esd_u.eta, esd_u.lam_preserve, esd_u.preserve_latents,
            esd_u.preserve_pool_seeds) == (8, 400, 2.5, 3.0, "own", 1)
    assert (plain.eta, plain.batch_size, plain.sample_steps, plain.loss_weighting) == (0.5, 4, None, "guidance")
    assert (alternative.batch_size, alternative.steps, alternative.loss_weighting) == (1, 100, "none")
    assert (plain_style.lam_preserve, plain_style.lr, plain_style.sample_steps) == (2.0, 7e-4, 10)
    assert (trce.steps, trce.sample_steps, trce.lr) == (100, 10, 1e-6)
    seen.clear()
    erasekit.erase(world, "forceforget", ["triangle"])  # switched actions from where each concept is decided
    erasekit.erase(world, "forceforget", preset="shapeworld/tobias renn", lr=3e-3)
    erasekit.erase(erasekit.load_pipeline(tiny_dirs["sd1"]), "forceforget", ["cat"], reward="detector-clip",
                   clip_model="unused")
    shape, style, other = seen
    assert (shape.explore_mode, shape.explore_from, shape.lr, shape.reader_dims) == ("switch", 0.7, 1e-2, 1)
    assert (style.explore_from, style.timestep_fraction, style.advantage_scale, style.lr) == (0.3, 0.7, "pooled", 3e-3)
    assert shape.advantage_scale == "prompt"
    assert (other.explore_share, other.lr, other.reader_dims) == (0.0, 3e-4, 0)  # the paper's (DDPO's) elsewhere
