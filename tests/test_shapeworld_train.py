"""ShapeWorld's training command on a tiny budget (a smoke run of the whole trainer on erasekit's training loop): it
exports a plain diffusers pipeline, and a run killed right after a checkpoint resumes to exactly the weights of an
uninterrupted run."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import load_file

from erasekit.shapeworld import train

TINY = ["--seed", "3", "--num-images", "48", "--vae-steps", "2", "--vae-batch", "4", "--steps", "4", "--batch", "4",
        "--checkpoint-every", "2", "--warmup", "1", "--threads", "1"]


def run(out):
    threads = torch.get_num_threads()
    try:
        train.main(["--out", str(out), *TINY])
    finally:
        torch.set_num_threads(threads)  # main() sets the thread count for the whole process


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """One uninterrupted tiny run, shared by the tests."""
    out = tmp_path_factory.mktemp("whole")
    run(out)
    return out


def test_training_exports_a_v_prediction_pipeline(whole):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(whole / "pipeline")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert (whole / "summary.json").exists()


def test_the_stages_train_on_the_training_loop(whole):
    """Each stage's checkpoint and loss log are the training loop's, in its own folder."""
    import json
    for stage, steps in (("vae", 2), ("denoiser", 4)):
        state = json.loads((whole / stage / "checkpoint" / "state.json").read_text())
        assert state["step"] == steps and state["record"]["shapeworld"]["seed"] == 3
        rows = (whole / stage / "log.csv").read_text().splitlines()
        assert rows[0] == "step,loss,lr,seconds" and rows[-1].startswith(f"{steps},")
    assert (whole / "denoiser" / "checkpoint" / "ema.safetensors").exists()  # diffusers' EMAModel, checkpointed


def test_a_run_in_progress_exports_its_checkpoint_s_ema_weights(whole, tmp_path):
    """--from-checkpoint: the EMA weights of the last checkpoint; at the end of a run, the trained UNet itself."""
    threads = torch.get_num_threads()
    try:
        train.main(["--out", str(whole), "--export", str(tmp_path / "pipe"), "--from-checkpoint", *TINY])
    finally:
        torch.set_num_threads(threads)
    unet = "unet/diffusion_pytorch_model.safetensors"
    expected, exported = load_file(whole / "pipeline" / unet), load_file(tmp_path / "pipe" / unet)
    assert expected.keys() == exported.keys() and all(torch.equal(expected[k], exported[k]) for k in expected)


def test_a_killed_run_resumes_to_the_same_weights(whole, tmp_path, monkeypatch, kill_training_at):
    kill_training_at(2)  # the VAE's 2 steps pass; the denoiser dies at step 2, right after its step-2 checkpoint
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    monkeypatch.undo()
    assert not (tmp_path / "resumed" / "unet_trained").exists()
    import erasekit.training.loop as loop
    ran, step = [], loop._step
    monkeypatch.setattr(loop, "_step", lambda *args: ran.append(args[-1]) or step(*args))
    run(tmp_path / "resumed")
    assert ran == [2, 3]  # the finished VAE is kept; the denoiser continues from its step-2 checkpoint
    unet = "pipeline/unet/diffusion_pytorch_model.safetensors"
    expected, resumed = load_file(whole / unet), load_file(tmp_path / "resumed" / unet)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """A checkpoint is one atomic set: weights, optimizer state and step are replaced together or not at all."""
    from erasekit.training import checkpoint as ckpt
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def save(step):
        weights = {k: v.detach() for k, v in model.named_parameters()}
        ckpt.save(tmp_path / "ckpt", ckpt.Checkpoint(step, weights, optimizer.state_dict(), None, {}))
    save(1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    save_file = ckpt.save_file

    def crash(tensors, path, *args, **kwargs):  # the weights are written, then the disk fills up
        if path.name == ckpt.OPTIMIZER:
            raise OSError("disk full")
        save_file(tensors, path, *args, **kwargs)
    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save(2)
    monkeypatch.undo()
    fresh = torch.nn.Linear(2, 2)
    found = ckpt.load(tmp_path / "ckpt", {})
    fresh.load_state_dict(found.weights)
    assert found.step == 1
    assert all(torch.equal(fresh.state_dict()[k], saved[k]) for k in saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no half-written folder left beside it
