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
