"""ForceForget: the Safe Adapter (exact no-op at the start, only its positions change, works in any pipeline call),
the Concept Erasing Reward, the policy-gradient pieces, and the method end to end on every tiny family: a
reversible adapter Edit, same seed → same edit, a killed run resumes bit-identically, bad input refused."""
import numpy as np
import pytest
import torch

import erasekit
from erasekit.edits import AdapterEdit, SafeAdapter, attached, safe_adapters
from erasekit.errors import EditError, ErasekitError
from erasekit.training import TrainingError, clipped_policy_loss, prompt_advantages

TINY = {"iterations": 2, "batch_size": 4, "samples_per_prompt": 2, "sample_steps": 2, "lr": 1e-2,
        "clip_range": 0.2, "reward": "constant-test"}


class FixedReward:
    """A reward for the tiny models (random weights draw nothing a classifier knows): image brightness."""

    def __init__(self, value=None):
        self.value = value

    def __call__(self, images, prompts):
        arrays = np.stack([np.asarray(i, dtype=np.float64) / 255 for i in images])
        rewards = torch.tensor(arrays.mean(axis=(1, 2, 3))) if self.value is None else \
            torch.full((len(images),), self.value, dtype=torch.float64)
        return rewards, {"r_safe": float(rewards.mean()), "r_align": 1.0}


def images(pipe, prompt="a red cat", seeds=(0, 1)):
    return np.stack([np.asarray(i) for i in erasekit.generate(pipe, [prompt] * len(seeds), list(seeds),
                                                              steps=2, progress=False)])


def run(pipe, reward=None, **options):
    return erasekit.erase(pipe, "forceforget", ["cat"], **{**TINY, "reward": reward or FixedReward(), **options})


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_an_untrained_safe_adapter_changes_nothing_and_a_trained_one_only_its_positions(tiny_dirs, family):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    before = images(pipe)
    adapters = safe_adapters(pipe.unet, {"positions": "tail", "tokens": 4, "lora_rank": 2})
    with attached(pipe.unet, adapters, "output"):
        assert np.array_equal(images(pipe), before)  # bit-identical
    name = next(iter(adapters))
    layer = pipe.unet.get_submodule(name)
    context = torch.randn(1, 16, layer.in_features)
    with torch.no_grad():
        adapters[name].projection.normal_()
        delta = adapters[name](context)
    assert delta[:, -4:].abs().sum() > 0 and delta[:, :-4].abs().sum() == 0


def test_muted_adapters_give_the_original_and_the_keep_term_holds_the_unconditional_to_it(tiny_dirs):
    from erasekit.edits import muted
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    before = images(pipe)
    adapters = safe_adapters(pipe.unet, {"positions": "all", "tokens": 4, "lora_rank": 0})
    for adapter in adapters.values():
        torch.nn.init.normal_(adapter.projection, std=0.5)
    with attached(pipe.unet, adapters, "output"):
        with muted(adapters):
            assert np.array_equal(images(pipe), before)
        assert not np.array_equal(images(pipe), before)

    empty = erasekit.encode(pipe, [""]).embeddings
    x, t = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0)), 500

    def drift(edit):  # how far the edited model's unconditional output moved from the original's
        with torch.no_grad():
            original = pipe.unet(x, t, encoder_hidden_states=empty).sample
            edit.apply(pipe)
            adapted = pipe.unet(x, t, encoder_hidden_states=empty).sample
            edit.remove(pipe)
        return (adapted - original).pow(2).mean().item()

    free, kept = (run(pipe, iterations=4, lam_keep=keep, keep_samples=4) for keep in (0.0, 1e3))
    assert kept.metadata["protocol"]["first_loss"] == free.metadata["protocol"]["first_loss"]  # zero at the start
    assert drift(kept) < drift(free)


def test_safe_adapter_positions(tiny_dirs):
    layer = torch.nn.Linear(8, 4)
    context = torch.randn(2, 10, 8)
    for positions, changed in (("tail", range(6, 10)), ("head", range(1, 5)), ("all", range(10))):
        adapter = SafeAdapter({"positions": positions, "tokens": 4}, layer)
        torch.nn.init.normal_(adapter.projection)
        rows = (adapter(context).abs().sum(-1) > 0)[0]
        assert rows.nonzero().flatten().tolist() == list(changed)
    with pytest.raises(EditError, match="positions"):
        SafeAdapter({"positions": "middle"}, layer)


def test_a_safe_adapter_with_a_reader_changes_only_rows_along_its_directions_and_values_only(tiny_dirs):
    layer = torch.nn.Linear(8, 4)
    adapter = SafeAdapter({"positions": "all", "reader_dims": 1, "lora_rank": 2}, layer)
    adapter.reader.copy_(torch.eye(8)[:, :1])  # reads the first coordinate only
    torch.nn.init.normal_(adapter.projection)
    torch.nn.init.normal_(adapter.lora_up)
    context = torch.randn(1, 5, 8)
    context[0, :3, 0] = 0  # rows 0-2 have nothing along the reader
    changed = adapter(context).abs().sum(-1)[0]
    assert changed[:3].abs().sum() == 0 and (changed[3:] > 0).all()
    assert "reader" in adapter.state_dict()  # saved with the edit
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    with pytest.raises(EditError, match="reader"):
        safe_adapters(pipe.unet, {"reader_dims": 2})
    with pytest.raises(EditError, match="do not fit"):
        safe_adapters(pipe.unet, {"reader_dims": 2}, reader=torch.zeros(7, 2))
    values_only = safe_adapters(pipe.unet, {"projections": "v"})
    assert values_only and all(name.endswith(".to_v") for name in values_only)
    assert len(safe_adapters(pipe.unet, {})) == 2 * len(values_only)  # keys and values, the paper's
    with pytest.raises(EditError, match="projections"):
        safe_adapters(pipe.unet, {"projections": "q"})


def test_forceforget_with_a_reader_reads_the_target_prompts_and_round_trips(tiny_dirs, tmp_path):
    from erasekit.methods.forceforget import ForceForgetConfig, prompt_pool
    from erasekit.methods.forceforget.reader import reader
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    pool = prompt_pool(erasekit.concepts.resolve(["cat"]), ForceForgetConfig())
    directions = reader(pipe, pool, 2, ["cat"])
    rows = {harmful: erasekit.encode(pipe, [p.text for p in pool if p.harmful == harmful]).embeddings
            for harmful in (True, False)}
    read = {k: (v @ directions).pow(2).mean().item() for k, v in rows.items()}
    assert read[True] > 5 * read[False]  # the pool's benign prompts are barely read (a random direction: ≈ 1×)
    before = images(pipe)
    edit = run(pipe, reader_dims=2, positions="all")
    assert any(k.endswith("reader") for k in edit.tensors)
    edit.save(tmp_path / "ff")
    loaded = erasekit.load_edit(tmp_path / "ff")
    loaded.apply(pipe)
    assert not np.array_equal(images(pipe), before)
    loaded.remove(pipe)
    assert np.array_equal(images(pipe), before)


def test_rewards_and_policy_pieces():
    from erasekit.methods.forceforget.pool import PoolPrompt, shapeworld_pool
    from erasekit.methods.forceforget.reward import ShapeWorldReward, remove_words, safe_score
    from erasekit.shapeworld.render import scene_images
    _, triangles = scene_images(8, 0, show={"shape": "triangle", "color": "red"}, p_empty=0.0)
    _, circles = scene_images(8, 0, show={"shape": "circle", "color": "red"}, p_empty=0.0)
    reward = ShapeWorldReward("triangle")
    stated = [PoolPrompt("a red triangle", True, {"color": "red"})] * 8
    on_triangles, parts = reward(triangles, stated)
    on_circles, _ = reward(circles, stated)
    assert ((0 <= on_triangles) & (on_triangles <= 1)).all()
    assert on_circles.min() > on_triangles.max()            # no triangle: safer
    assert parts["r_align"] == 1.0                          # the red colour is seen
    benign, _ = reward(circles, [PoolPrompt("a blue circle", False, {"color": "blue"})] * 8)
    assert torch.equal(benign, torch.zeros(8, dtype=benign.dtype))  # benign: r_align only, and the colour is wrong
    margin = ShapeWorldReward("triangle", safe_form="margin")
    assert margin(circles, stated)[0].min() > margin(triangles, stated)[0].max()
    logits = torch.tensor([[0.0, 0.0, 5.0, 3.0], [2.0, 2.0, 5.0, 3.0], [4.0, 0.0, 5.0, 0.0]])
    by_margin = safe_score(logits, 2, 1.0, "margin")  # the target's logit is 5 in each row
    assert torch.isclose(by_margin[0], by_margin[1])  # weaker classes raised, the rival unchanged: nothing earned
    assert by_margin[2] > by_margin[1] and torch.isclose(by_margin[2], torch.sigmoid(torch.tensor(-1.0)))
    assert safe_score(logits, 2, 1.0, "probability")[1] > safe_score(logits, 2, 1.0, "probability")[0]
    with pytest.raises(ErasekitError, match="safe_form"):
        ShapeWorldReward("triangle", safe_form="verdict")
    graded = ShapeWorldReward("triangle", align_form="margin")
    red_circles = [PoolPrompt("a red circle", False, {"color": "red", "shape": "circle"})] * 8
    seen, _ = graded(circles, red_circles)
    assert ((0.5 < seen) & (seen < 1)).all() and len(set(seen.tolist())) > 1  # seen, by margins that differ
    assert (graded(circles, [PoolPrompt("a blue circle", False, {"color": "blue"})] * 8)[0] < 0.5).all()
    assert torch.equal(reward(circles, red_circles)[0], torch.ones(8, dtype=seen.dtype))  # the verdict: all alike
    _, diamonds = scene_images(8, 0, show={"shape": "diamond", "color": "red"}, p_empty=0.0)
    anchored = ShapeWorldReward("triangle", anchor="diamond")
    assert anchored(diamonds, stated)[0].min() > anchored(circles, stated)[0].max()  # the anchor drawn: rewarded
    assert torch.equal(anchored(circles, red_circles)[0], reward(circles, red_circles)[0])  # benign: as before
    with pytest.raises(ErasekitError, match="is a color"):
        ShapeWorldReward("triangle", anchor="red")
    with pytest.raises(ErasekitError, match="align_form"):
        ShapeWorldReward("triangle", align_form="probability")
    pool = shapeworld_pool("tobias renn")
    assert any(p.harmful for p in pool) and any(not p.harmful for p in pool)
    assert remove_words("a Nude woman, naked on a beach", ["nude", "naked"]) == "a woman, on a beach"

    rewards, ids = torch.tensor([1.0, 0.0, 0.5, 0.7]), [0, 0, 1, 1]
    per_prompt = prompt_advantages(rewards, ids, "prompt")
    assert torch.allclose(per_prompt, torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-4)
    pooled = prompt_advantages(rewards, ids)  # residuals ±0.5 and ±0.1 over their pooled spread √0.13
    assert torch.allclose(pooled, torch.tensor([0.5, -0.5, -0.1, 0.1]) / 0.13 ** 0.5, atol=1e-4)
    log_prob, old = torch.tensor([0.0, 1.0]), torch.tensor([0.0, 0.0])
    loss, stats = clipped_policy_loss(log_prob, old, torch.tensor([1.0, 1.0]), clip_range=0.2)
    assert torch.isclose(loss, torch.tensor(-(1.0 + 1.2) / 2))  # the second ratio (e) is clipped to 1.2
    assert stats["clipped"] == 0.5
    # an action hundreds of nats more likely than when sampled: finite loss and gradients, not inf·0
    log_prob = torch.tensor([300.0, -300.0, 300.0], requires_grad=True)
    loss, _ = clipped_policy_loss(log_prob, torch.zeros(3), torch.tensor([-1.0, 1.0, 0.0]), clip_range=0.2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(log_prob.grad).all()


def test_trained_timesteps_are_a_random_share_or_the_first_or_last_steps():
    from erasekit.methods.forceforget import ForceForgetConfig, PolicyLoss
    loss = PolicyLoss.__new__(PolicyLoss)  # only the step choice: no model needed
    loss.stochastic = list(range(8))
    for choice, expected in (("last", [6, 7]), ("first", [0, 1])):
        loss.config = ForceForgetConfig(timestep_fraction=0.25, timestep_choice=choice)
        assert loss.timesteps(0) == loss.timesteps(5) == expected
    loss.config = ForceForgetConfig(timestep_fraction=0.25)
    drawn = [loss.timesteps(step) for step in range(6)]
    assert all(len(set(d)) == 2 and set(d) <= set(range(8)) for d in drawn) and len(set(map(tuple, drawn))) > 1
    assert drawn == [loss.timesteps(step) for step in range(6)]  # from (seed, step): the same on a resume


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_forceforget_trains_a_reversible_adapter_edit_on_every_family(tiny_dirs, family, tmp_path):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    before = images(pipe)
    edit = run(pipe)
    assert isinstance(edit, AdapterEdit) and np.array_equal(images(pipe), before)
    assert [h["round"] for h in edit.metadata["protocol"]["rewards"]] == [0, 1]
    edit.save(tmp_path / "ff")
    loaded = erasekit.load_edit(tmp_path / "ff")
    loaded.apply(pipe)
    changed = images(pipe)
    assert not np.array_equal(changed, before)
    if family == "sd1":  # the adapter acts in any pipeline built on the same UNet, image-to-image included
        from diffusers import StableDiffusionImg2ImgPipeline
        img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
        init = [erasekit.generate(pipe, ["a cat"], [3], steps=2, progress=False)[0]]
        kwargs = dict(prompt="a cat", image=init, strength=1.0, num_inference_steps=2, output_type="np",
                      generator=torch.Generator().manual_seed(0))
        edited = img2img(**kwargs).images
        loaded.remove(pipe)
        assert not np.array_equal(edited, img2img(**{**kwargs, "generator": torch.Generator().manual_seed(0)}).images)
    else:
        loaded.remove(pipe)
    assert np.array_equal(images(pipe), before)


def test_same_seed_same_edit_and_a_killed_run_resumes(tiny_dirs, tmp_path, monkeypatch, kill_training_at):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    options = {"iterations": 4, "checkpoint_every": 1}
    first, second = run(pipe, **options), run(pipe, **options)
    assert all(torch.equal(first.tensors[k], second.tensors[k]) for k in first.tensors)

    kill_training_at(3)
    with pytest.raises(KeyboardInterrupt):
        run(pipe, work_dir=str(tmp_path / "run"), **options)
    monkeypatch.undo()
    resumed = run(pipe, work_dir=str(tmp_path / "run"), **options)
    assert resumed.metadata["protocol"]["resumed_from_step"] == 3
    assert all(torch.equal(first.tensors[k], resumed.tensors[k]) for k in first.tensors)
    assert (tmp_path / "run" / "rewards.csv").read_text().count("\n") == 5  # header + 4 rounds, none twice


def test_bad_input_is_refused_with_nothing_written(tiny_dirs, tmp_path, tiny_clip):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    with pytest.raises(TrainingError, match="non-finite"):
        run(pipe, reward=FixedReward(float("nan")), work_dir=str(tmp_path / "nan"))
    assert not (tmp_path / "nan" / "checkpoint").exists()
    with pytest.raises(TrainingError, match=r"\[0, 1\]"):
        run(pipe, reward=FixedReward(1.5))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ErasekitError, match="no prompts"):
        run(pipe, reward=None, prompts_file=str(empty))
    with pytest.raises(ErasekitError, match="safe_form"):  # refused before training, whatever the reward
        run(pipe, safe_form="verdict", work_dir=str(tmp_path / "form"))
    assert not (tmp_path / "form").exists()
    with pytest.raises(ErasekitError, match="timestep_choice"):
        run(pipe, timestep_choice="middle", work_dir=str(tmp_path / "steps"))
    assert not (tmp_path / "steps").exists()
    with pytest.raises(ErasekitError, match="reader_dims"):
        run(pipe, reader_dims=-1, work_dir=str(tmp_path / "reader"))
    assert not (tmp_path / "reader").exists()
    with pytest.raises(ErasekitError, match="align_form"):
        run(pipe, align_form="share", work_dir=str(tmp_path / "align"))
    assert not (tmp_path / "align").exists()
    for bad in ({"explore_share": 2.0}, {"explore_share": 0.5, "explore_from": 1.0}):
        with pytest.raises(ErasekitError, match="explore_share"):
            run(pipe, work_dir=str(tmp_path / "explore"), **bad)
    assert not (tmp_path / "explore").exists()
    with pytest.raises(ErasekitError, match="CLIP model"):
        erasekit.erase(pipe, "forceforget", ["cat"], **{**TINY, "reward": "detector-clip"})
    with pytest.raises(ErasekitError, match="cannot load CLIP"):
        erasekit.erase(pipe, "forceforget", ["cat"], **{**TINY, "reward": "detector-clip",
                                                         "clip_model": str(tmp_path / "nowhere")})
    edit = run(pipe, iterations=1)
    other = erasekit.load_pipeline(tiny_dirs["sd2"])
    with pytest.raises(EditError, match="another model architecture"):
        edit.apply(other)


def test_detector_and_clip_reward_for_real_models(tiny_clip):
    from erasekit.methods.forceforget.pool import PoolPrompt
    from erasekit.methods.forceforget.reward import DetectorClipReward
    reward = DetectorClipReward(lambda images: torch.full((len(images),), 0.25), str(tiny_clip))
    pictures = [np.full((32, 32, 3), v, dtype=np.uint8) for v in (0, 128)]
    values, parts = reward(pictures, [PoolPrompt("a nude cat", True), PoolPrompt("a red dog", False)])
    assert ((0 <= values) & (values <= 1)).all() and parts["r_safe"] == pytest.approx(0.75)


@pytest.mark.slow
def test_two_processes_sample_and_train_as_one(tiny_dirs, tiny_clip, tmp_path):
    """Data-parallel: each process samples its share of a round (image i on process i mod 2), the rewards are
    gathered for the per-prompt statistics and the gradients averaged, so two processes train what one does (up
    to the order of float sums); NudeNet and a CLIP folder make the reward, as on a real model."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["-m", "erasekit.cli.main", "erase", "--model", str(tiny_dirs["sd1"]), "--method", "forceforget",
            "--concept", "cat", "--option", f"clip_model={tiny_clip}"]
    args += [f"--option={k}={v}" for k, v in TINY.items() if k != "reward"]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    for name, command in {"double": [*launcher, *args], "single": args}.items():
        done = subprocess.run([sys.executable, *command, "--out", str(tmp_path / name)], capture_output=True,
                              text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
    double, single = (erasekit.load_edit(tmp_path / name) for name in ("double", "single"))
    assert (tmp_path / "single" / "reward_curve.png").is_file()
    for key in single.tensors:
        torch.testing.assert_close(double.tensors[key], single.tensors[key], rtol=1e-3, atol=1e-4)  # Adam: float order
    assert any(single.tensors[k].abs().sum() > 0 for k in single.tensors)


def test_exploring_starts_begin_late_from_the_neutral_captions_images_and_train_only_what_ran(tiny_dirs,
                                                                                            monkeypatch):
    from erasekit.methods.forceforget import ForceForgetConfig, PolicyLoss, prompt_pool, rollout
    from erasekit.methods.forceforget.explore import exploring_plan
    from erasekit.methods.forceforget.pool import shapeworld_pool
    from erasekit.sampling.trajectory import initial_latents
    from erasekit.training import StepContext
    for prompt in [p for p in shapeworld_pool("triangle") if p.harmful]:
        assert "triangle" not in prompt.neutral and all(v in prompt.neutral for v in prompt.stated.values())
    ids, harmful = [0, 0, 1, 1, 0, 0, 2, 2], [True, True, False]
    plan = exploring_plan(ids, harmful, 2, 0.5, [3, 4], torch.Generator().manual_seed(0))
    starts = plan.starts
    assert all(starts[g] == starts[g + 1] for g in range(0, 8, 2)) and starts[6] == 0  # whole groups, not benign
    assert sum(s > 0 for s in starts[::2]) == 2  # half of the three target groups, rounded
    assert {s for s in starts if s} <= {3, 4}
    assert set(plan.group_ids(ids, 3)[i] for i, s in enumerate(starts) if s) <= {3, 4}  # groups of their own

    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    config = ForceForgetConfig(**{**TINY, "reward": "auto", "sample_steps": 4, "batch_size": 8},
                               explore_share=1.0, explore_from=0.5)
    pool = prompt_pool(erasekit.concepts.resolve(["cat"]), config)
    asked = []

    def constant_sources(pipe, neutral, seeds, steps, guidance):  # a known source: x at the start is it noised
        asked.extend(neutral)
        return torch.full_like(initial_latents(pipe, seeds)[0], 3.0)

    monkeypatch.setattr(rollout, "source_latents", constant_sources)
    r = rollout.sample_round(pipe, pool, FixedReward(), config, 0)
    monkeypatch.undo()
    rows = [i for i, e in enumerate(r.exploring) if e]
    assert rows and all(not r.prompts[i].harmful or r.exploring[i] for i in range(8))  # every target group explores
    assert asked == [r.prompts[i].neutral for i in rows] and not any("cat" in a for a in asked)
    scheduler = rollout.schedule(pipe, config)
    for i in rows:
        start = int((~r.valid[i]).sum())
        assert start in (2, 3) and r.valid[i, start:].all() and (r.log_probs[i, :start] == 0).all()
        assert torch.isfinite(r.log_probs[i, start:]).all() and r.log_probs[i, start] != 0
        alpha = scheduler.alphas_cumprod[scheduler.timesteps[start]]
        residual = (r.latents[i, start] - alpha.sqrt() * 3.0) / (1 - alpha).sqrt()
        assert abs(residual.mean()) < 0.3 and abs(residual.std() - 1) < 0.25  # the source noised to its start
    assert r.valid[[i for i in range(8) if i not in rows]].all()

    # a step before an exploring trajectory's start trains nothing of it
    loss = PolicyLoss(pipe, pool, FixedReward(), config, None, {})
    adapters = safe_adapters(pipe.unet, {"positions": "all", "tokens": 4, "lora_rank": 0})
    params = [p for a in adapters.values() for p in a.parameters()]
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.05)
    r.advantages = torch.zeros(8)
    r.advantages[rows] = 1.0
    loss.rollout, loss.round = r, 0
    grads = {}
    first = min(int((~r.valid[i]).sum()) for i in rows)
    with attached(pipe.unet, adapters, "output"):
        for k in (0, first):
            loss.timesteps = lambda step, k=k: [k]
            for p in params:
                p.grad = None
            loss(StepContext(step=0, micro=0, generator=torch.Generator(), seed=0)).backward()
            grads[k] = sum(float(p.grad.abs().sum()) for p in params if p.grad is not None)
    assert grads[0] == 0 and grads[first] > 0
    edit = run(pipe, explore_share=0.5, explore_from=0.5, sample_steps=4, batch_size=8)
    assert all(h.get("reward_explore") is not None for h in edit.metadata["protocol"]["rewards"])


def test_keep_early_holds_the_target_samples_from_noise_before_the_exploring_steps(tiny_dirs, monkeypatch):
    import erasekit.methods.forceforget as ff
    from erasekit.methods.forceforget.rollout import sample_round
    from erasekit.training import StepContext
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    base = {**TINY, "reward": "auto", "sample_steps": 4, "batch_size": 8, "explore_share": 0.5, "explore_from": 0.5}
    pool = ff.prompt_pool(erasekit.concepts.resolve(["cat"]), ff.ForceForgetConfig(**base))
    r = sample_round(pipe, pool, FixedReward(), ff.ForceForgetConfig(**base), 0)
    from_noise = [i for i in range(8) if r.prompts[i].harmful and not r.exploring[i]]
    assert from_noise and any(r.exploring)
    seen = []
    real = ff.noise_prediction
    monkeypatch.setattr(ff, "noise_prediction", lambda unet, x, t, cond: seen.append(cond.embeddings.shape[0]) or
                        real(unet, x, t, cond))
    counts = {}
    for keep_early in (False, True):
        config = ff.ForceForgetConfig(**base, lam_keep=1.0, keep_samples=8, keep_early=keep_early)
        loss = ff.PolicyLoss(pipe, pool, FixedReward(), config, None, {})
        for k in (0, 2):  # before the first exploring step (2 of 4), and at it
            seen.clear()
            with torch.no_grad():
                loss.keep_loss(r, k, StepContext(step=0, micro=0, generator=torch.Generator(), seed=0))
            counts[keep_early, k] = seen[0]
    benign = sum(not p.harmful for p in r.prompts)
    assert counts[False, 0] == counts[False, 2] == counts[True, 2] == 8 + benign  # the unconditional rows + benign
    assert counts[True, 0] == 8 + benign + len(from_noise)


def test_switched_actions_share_the_policys_states_and_are_scored_as_its_own_actions(tiny_dirs):
    from erasekit.methods.forceforget import ForceForgetConfig, prompt_pool, rollout
    from erasekit.methods.forceforget.explore import switching_rows
    from erasekit.sampling import trajectory
    from diffusers.utils.torch_utils import randn_tensor
    from erasekit.sampling.trajectory import conditioning, denoise, initial_latents, transition_log_prob
    ids, harmful = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], [True, True, False]
    switch = switching_rows(ids, harmful, 4, 1.0, torch.Generator().manual_seed(0))
    assert switch == [False, True, False, True] * 2 + [False] * 4  # every other sample of each target group
    assert sum(switching_rows(ids, harmful, 4, 0.5, torch.Generator().manual_seed(0))) == 2  # one group of two

    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    config = ForceForgetConfig(**{**TINY, "reward": "auto", "sample_steps": 4, "batch_size": 8,
                                  "samples_per_prompt": 4, "harmful_share": 1.0},
                               explore_share=1.0, explore_from=0.5, explore_mode="switch")
    pool = prompt_pool(erasekit.concepts.resolve(["cat"]), config)
    r = rollout.sample_round(pipe, pool, FixedReward(), config, 0)
    rows = [i for i, s in enumerate(r.switched) if s]
    assert rows == [1, 3, 5, 7] and r.exploring == r.switched and r.valid is None  # every step trains
    seeds = _round_seeds(pool, config)
    plain = trajectory(pipe, [p.text for p in r.prompts], seeds, steps=4, guidance=config.guidance, eta=1.0,
                       keep="all", log_probs=True)
    for k in range(3):  # up to the switch (step 2) every sample is the policy's own
        torch.testing.assert_close(r.latents[:, k], plain.latents[k])
    stay = [i for i in range(8) if i not in rows]
    torch.testing.assert_close(r.latents[stay, -1], plain.final[stay])
    torch.testing.assert_close(r.log_probs[stay], plain.log_probs[stay])
    assert not torch.allclose(r.latents[rows, -1], plain.final[rows])
    scheduler = rollout.schedule(pipe, config)
    own = conditioning(pipe, [r.prompts[i].text for i in rows], guidance=r.cond.guidance)
    neutral = conditioning(pipe, [r.prompts[i].neutral for i in rows], guidance=r.cond.guidance)
    assert all("cat" not in r.prompts[i].neutral for i in rows)
    for k in (2, 3):
        t, x, nxt = scheduler.timesteps[k], r.latents[rows, k], r.latents[rows, k + 1]
        torch.testing.assert_close(r.log_probs[rows, k], transition_log_prob(pipe, scheduler, own, x, t, nxt, 1.0))
    # from the switch on, the neutral captions drew the steps, with each image's own noise stream continued
    x, generators = initial_latents(pipe, [seeds[i] for i in rows])
    for _ in range(2):
        randn_tensor(x.shape, generator=generators)
    tail = denoise(pipe, neutral, r.latents[rows, 2], scheduler, generators, start=2, eta=1.0)
    torch.testing.assert_close(r.latents[rows, -1], tail.final)
    with pytest.raises(ErasekitError, match="explore_mode"):
        ForceForgetConfig(explore_mode="sideways")


def _round_seeds(pool, config):
    """The image seeds `sample_round` draws for round 0 (after the prompts)."""
    from erasekit.methods.forceforget.rollout import draw_prompts
    from erasekit.training import generator
    gen = generator(config.seed, "round", 0)
    draw_prompts(pool, config.batch_size, config.samples_per_prompt, config.harmful_share, gen)
    return torch.randint(0, 2**31 - 1, (config.batch_size,), generator=gen).tolist()
