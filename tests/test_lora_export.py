import pytest
import torch

import erasekit
from erasekit.edits import SamplingTimeEdit


def unet_output(pipe, prompt="a nude cat"):
    enc = erasekit.encode(pipe, [prompt])
    unet = pipe.unet
    torch.manual_seed(0)
    sample = torch.randn(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    kwargs = {}
    if pipe.erasekit_family == "sdxl":
        kwargs["added_cond_kwargs"] = {"text_embeds": enc.pooled, "time_ids": torch.zeros(1, 6)}
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), enc.embeddings, **kwargs).sample


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("method", ["uce", "rece"])
def test_plain_diffusers_lora_reproduces_the_edit(tiny_dirs, tmp_path, family, method):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    base = unet_output(pipe)
    edit = erasekit.erase(pipe, method, ["nude"], anchor="cat", **({"epochs": 2} if method == "rece" else {}))
    report = edit.export_lora(tmp_path / "lora.safetensors")
    assert report["max_relative_error"] < 1e-6
    edit.apply(pipe)
    ours = unet_output(pipe)
    plain = erasekit.load_pipeline(tiny_dirs[family])
    plain.load_lora_weights(str(tmp_path / "lora.safetensors"))
    theirs = unet_output(plain)
    assert (ours - base).abs().max() > 1e-3  # the edit does change the prediction
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)


def test_truncated_export_reports_its_error(tiny_dirs, tmp_path):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = erasekit.erase(pipe, "rece", ["nude"], epochs=2)
    report = edit.export_lora(tmp_path / "l.safetensors", max_rank=1)
    assert report["ranks"] == [1]
    assert 1e-4 < report["max_relative_error"] < 1


def test_export_of_a_processor_edit_is_refused(tmp_path):
    edit = SamplingTimeEdit(method="x", concepts=["c"], config={"session": "p"})
    with pytest.raises(erasekit.EditError, match="only weight-delta"):
        edit.export_lora(tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
