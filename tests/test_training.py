"""The training core: reproducible from the seed, resumable bit-identically, refusing bad settings and
non-finite losses without losing the last good checkpoint."""
import math

import pytest
import torch

from erasekit.training import TrainingConfig, TrainingError, denoising_loss, denoising_target, snr_weights, train


def problem(seed=0):
    """A small noisy regression: weights w (4,) fit y = X w* + noise drawn per step from the step's generator."""
    w = torch.zeros(4, requires_grad=True)
    target = torch.tensor([1.0, -2.0, 0.5, 3.0])

    def loss_fn(ctx):
        x = torch.randn(16, 4, generator=ctx.generator)
        y = x @ target + 0.1 * torch.randn(16, generator=ctx.generator)
        return ((x @ w - y) ** 2).mean() * (1 + 0.01 * torch.rand(()))  # the global generator is seeded too
    return w, target, loss_fn


def config(**overrides):
    return TrainingConfig(**{"steps": 40, "lr": 0.05, "optimizer": "adam", "checkpoint_every": 10,
                             "log_every": 5, "seed": 7, **overrides})


def test_training_fits_and_the_same_seed_gives_the_same_weights():
    w1, target, loss1 = problem()
    result = train(loss1, {"w": w1}, config(lr=0.2), progress=False)
    assert result.losses[-1] < result.losses[0] / 10 and (w1 - target).abs().max() < 0.5
    w2, _, loss2 = problem()
    train(loss2, {"w": w2}, config(lr=0.2), progress=False)
    assert torch.equal(w1, w2)
    w3, _, loss3 = problem()
    train(loss3, {"w": w3}, config(lr=0.2, seed=8), progress=False)
    assert not torch.equal(w1, w3)


class Killed(Exception):
    pass


@pytest.mark.parametrize("ema", [None, 0.9])
def test_a_killed_run_resumes_bit_identically(tmp_path, ema):
    whole, _, loss_fn = problem()
    train(loss_fn, {"w": whole}, config(), folder=tmp_path / "whole", ema_decay=ema, progress=False)

    w, _, loss_fn = problem()

    def dies_at_step_25(ctx):
        if ctx.step == 25:
            raise Killed
        return loss_fn(ctx)
    with pytest.raises(Killed):
        train(dies_at_step_25, {"w": w}, config(), folder=tmp_path / "run", ema_decay=ema, progress=False)
    w, _, loss_fn = problem()  # a new process: fresh weights, restored from the step-20 checkpoint
    result = train(loss_fn, {"w": w}, config(), folder=tmp_path / "run", ema_decay=ema, progress=False)
    assert result.first_step == 20 and len(result.losses) == 20
    assert torch.equal(w, whole)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows == (tmp_path / "whole" / "log.csv").read_text().splitlines()[:1] + rows[1:]
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(5, 41, 5))  # nothing logged twice


def test_a_non_finite_loss_stops_with_the_last_good_checkpoint_kept(tmp_path):
    w, _, loss_fn = problem()

    def explodes_at_step_15(ctx):
        return loss_fn(ctx) * (float("nan") if ctx.step == 15 else 1.0)
    with pytest.raises(TrainingError, match="nan at step 16"):
        train(explodes_at_step_15, {"w": w}, config(), folder=tmp_path, progress=False)
    import json
    assert json.loads((tmp_path / "checkpoint" / "state.json").read_text())["step"] == 10
    w, _, loss_fn = problem()
    result = train(loss_fn, {"w": w}, config(), folder=tmp_path, progress=False)  # resumes from step 10
    assert result.first_step == 10 and math.isfinite(result.losses[-1])


def test_a_resume_with_other_settings_is_refused(tmp_path):
    w, _, loss_fn = problem()
    train(loss_fn, {"w": w}, config(steps=10), folder=tmp_path, progress=False)
    before = (tmp_path / "checkpoint" / "weights.safetensors").read_bytes()
    with pytest.raises(TrainingError, match="other settings .*lr|training"):
        train(loss_fn, {"w": w}, config(steps=10, lr=0.01), folder=tmp_path, progress=False)
    with pytest.raises(TrainingError, match="other settings"):
        train(loss_fn, {"w": w}, config(steps=10), folder=tmp_path, record={"concept": "other"}, progress=False)
    assert (tmp_path / "checkpoint" / "weights.safetensors").read_bytes() == before


@pytest.mark.parametrize("bad", [{"lr": 0.0}, {"lr": -1e-4}, {"lr": float("nan")}, {"lr": float("inf")},
                                 {"steps": 0}, {"steps": 2.5}, {"accumulation": 0}, {"optimizer": "lion"},
                                 {"schedule": "step"}, {"grad_clip": float("nan")}, {"warmup": -1},
                                 {"lr_floor": -0.1}, {"lr_floor": 1.5}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(TrainingError):
        TrainingConfig(**bad)


def test_an_empty_selection_is_refused(tmp_path):
    with pytest.raises(TrainingError, match="nothing to train"):
        train(lambda ctx: torch.tensor(0.0), {}, config(), folder=tmp_path, progress=False)
    assert not (tmp_path / "checkpoint").exists()


def test_accumulated_micro_batches_equal_one_large_batch():
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    y = torch.randn(8, generator=torch.Generator().manual_seed(1))

    def run(accumulation):
        w = torch.zeros(3, requires_grad=True)
        size = 8 // accumulation

        def loss_fn(ctx):
            part = slice(ctx.micro * size, (ctx.micro + 1) * size)
            return ((x[part] @ w - y[part]) ** 2).mean()
        train(loss_fn, {"w": w}, TrainingConfig(steps=3, lr=0.1, optimizer="sgd", grad_clip=0,
                                                accumulation=accumulation), progress=False)
        return w
    torch.testing.assert_close(run(1), run(4))


def test_learning_rate_schedules():
    cosine = TrainingConfig(steps=10, lr=1.0, schedule="cosine", warmup=2)
    assert [cosine.lr_at(s) for s in (0, 1)] == [0.5, 1.0]
    assert cosine.lr_at(2) == 1.0 and cosine.lr_at(6) == pytest.approx(0.5) and cosine.lr_at(9) < 0.05
    assert TrainingConfig(steps=4, lr=2.0, schedule="linear").lr_at(2) == pytest.approx(1.0)


def test_a_schedule_can_end_above_zero():
    cosine = TrainingConfig(steps=10, lr=1.0, schedule="cosine", lr_floor=0.1)
    assert cosine.lr_at(0) == 1.0 and cosine.lr_at(5) == pytest.approx(0.55) and cosine.lr_at(9) > 0.1
    assert cosine.lr_at(10) == pytest.approx(0.1)  # the end of the span
    assert TrainingConfig(steps=4, lr=2.0, schedule="linear", lr_floor=0.5).lr_at(2) == pytest.approx(1.5)
    assert TrainingConfig(steps=4, lr=2.0, lr_floor=0.5).lr_at(3) == 2.0  # constant ignores it


def test_buffers_are_checkpointed_and_a_killed_run_restores_them(tmp_path):
    """BatchNorm's running statistics change in the forward pass, not by the optimiser: a resumed run must restore
    them too to continue bit-identically."""
    def model_and_loss():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))

        def loss_fn(ctx):
            x = torch.randn(8, 3, generator=ctx.generator)
            return (model(x).squeeze(1) - x.sum(1)).pow(2).mean()
        return model, loss_fn

    def run(folder, loss_wrapper=lambda f: f):
        model, loss_fn = model_and_loss()
        train(loss_wrapper(loss_fn), dict(model.named_parameters()), config(steps=30), folder=folder,
              buffers=dict(model.named_buffers()), progress=False)
        return model

    whole = run(tmp_path / "whole")

    def dies_at_step_25(loss_fn):
        def dying(ctx):
            if ctx.step == 25:
                raise Killed
            return loss_fn(ctx)
        return dying
    with pytest.raises(Killed):
        run(tmp_path / "run", dies_at_step_25)
    resumed = run(tmp_path / "run")
    expected, got = whole.state_dict(), resumed.state_dict()
    assert "1.running_mean" in got and all(torch.equal(expected[k], got[k]) for k in expected)
    model, _ = model_and_loss()
    with pytest.raises(TrainingError, match="both as parameters and buffers"):
        train(lambda ctx: model(torch.ones(2, 3)).sum(), {"w": model[0].weight}, config(),
              buffers={"w": model[1].running_mean}, progress=False)


def test_denoising_targets_and_min_snr_weights():
    from diffusers import DDPMScheduler
    latents, noise = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    t = torch.tensor([10, 500, 990])
    eps = DDPMScheduler(prediction_type="epsilon")
    v = DDPMScheduler(prediction_type="v_prediction")
    assert torch.equal(denoising_target(eps, latents, noise, t), noise)
    a = v.alphas_cumprod[t].sqrt()[:, None, None, None]
    s = (1 - v.alphas_cumprod[t]).sqrt()[:, None, None, None]
    torch.testing.assert_close(denoising_target(v, latents, noise, t), a * noise - s * latents)
    snr = v.alphas_cumprod[t] / (1 - v.alphas_cumprod[t])
    torch.testing.assert_close(snr_weights(v, t, 5.0), snr.clamp(max=5) / (snr + 1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(snr_weights(eps, t, 5.0), snr.clamp(max=5) / snr, rtol=1e-4, atol=1e-6)
    prediction = noise + 0.1
    assert denoising_loss(prediction, eps, latents, noise, t).item() == pytest.approx(0.01, rel=1e-5)
