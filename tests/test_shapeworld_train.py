"""ShapeWorld's training command on a tiny budget: it exports a plain diffusers pipeline, and a run killed right after
a checkpoint resumes to exactly the weights of an uninterrupted run."""
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


def test_a_killed_run_resumes_to_the_same_weights(whole, tmp_path, monkeypatch):
    class Killed(Exception):
        pass

    save = train.Checkpoint.save

    def save_then_die(self, step, modules, optimizer):
        save(self, step, modules, optimizer)
        if self.folder.name == "ckpt_denoiser" and step == 2:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(train.Checkpoint, "save", save_then_die)
        with pytest.raises(Killed):
            run(tmp_path / "resumed")
    assert not (tmp_path / "resumed" / "unet_trained").exists()
    run(tmp_path / "resumed")
    unet = "pipeline/unet/diffusion_pytorch_model.safetensors"
    expected, resumed = load_file(whole / unet), load_file(tmp_path / "resumed" / unet)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    """A checkpoint is one atomic set: weights, optimizer state and step are replaced together or not at all."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = train.Checkpoint(tmp_path / "ckpt")
    ckpt.save(1, {"model": model}, optimizer)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(train.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(2, {"model": model}, optimizer)
    monkeypatch.undo()
    fresh = torch.nn.Linear(2, 2)
    assert ckpt.load({"model": fresh}, torch.optim.SGD(fresh.parameters(), lr=0.1)) == 1
    assert all(torch.equal(fresh.state_dict()[k], saved[k]) for k in saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no half-written folder left beside it
