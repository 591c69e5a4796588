import json

import pytest

from erasekit.cli.main import main as cli


def run_generate(tiny_dirs, out, *extra):
    return cli(["generate", "--model", str(tiny_dirs["sd1"]), "--prompt", "a red cat", "--steps", "2",
                "--out", str(out), *extra])


def test_generate_writes_images_grid_and_settings(tiny_dirs, tmp_path):
    assert run_generate(tiny_dirs, tmp_path / "a", "--num-images", "3", "--seed", "7") == 0
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert names == ["0007.png", "0008.png", "0009.png"]
    assert (tmp_path / "a" / "grid.png").stat().st_size > 0
    settings = json.loads((tmp_path / "a" / "generate.json").read_text())
    assert settings["seeds"] == [7, 8, 9] and settings["steps"] == 2 and settings["prompt"] == "a red cat"


def test_same_seed_same_bytes_whatever_the_batch_size(tiny_dirs, tmp_path):
    run_generate(tiny_dirs, tmp_path / "a", "--num-images", "3", "--batch-size", "3")
    run_generate(tiny_dirs, tmp_path / "b", "--num-images", "3", "--batch-size", "1")
    run_generate(tiny_dirs, tmp_path / "c", "--num-images", "1", "--seed", "1")
    for name in ("0000.png", "0001.png", "0002.png"):
        assert (tmp_path / "a/images" / name).read_bytes() == (tmp_path / "b/images" / name).read_bytes()
    assert (tmp_path / "a/images/0001.png").read_bytes() == (tmp_path / "c/images/0001.png").read_bytes()
    assert (tmp_path / "a/images/0000.png").read_bytes() != (tmp_path / "a/images/0001.png").read_bytes()


def test_every_subcommand_has_help_with_model_option(capsys):
    for command in ("generate", "erase", "eval", "attack", "bench", "report", "gie-adapter", "purify"):
        assert cli([command, "--help"]) == 0
        assert "--model" in capsys.readouterr().out


def test_sampling_time_edits_from_erase_to_generate(tiny_dirs, tmp_path):
    from PIL import Image
    import numpy as np
    model = str(tiny_dirs["sd1"])
    run_generate(tiny_dirs, tmp_path / "plain", "--num-images", "2")
    for method, option, keep in (("gie", "strength=-4", ["dog", "red ball"]), ("sld", "strength=max", [])):
        edit = tmp_path / f"{method}-edit"
        assert cli(["erase", "--model", model, "--method", method, "--concept", "cat", "--option", option,
                    "--keep", *keep, "--out", str(edit)]) == 0
        record = json.loads((edit / "edit.json").read_text())
        assert record["kind"] == "sampling_time" and record["config"]["session"] == method
        assert record["config"]["spec"]["keep"] == keep  # GIE spares their span at sampling time
        assert run_generate(tiny_dirs, tmp_path / method, "--num-images", "2", "--edit", str(edit)) == 0
        for name in ("0000.png", "0001.png"):
            a, b = (np.asarray(Image.open(tmp_path / d / "images" / name), float) for d in ("plain", method))
            assert np.abs(a - b).mean() > 0.5


def test_lora_of_a_sampling_time_edit_is_refused_before_writing(tiny_dirs, tmp_path, capsys):
    out, lora = tmp_path / "edit", tmp_path / "x.safetensors"
    code = cli(["erase", "--model", str(tiny_dirs["sd1"]), "--method", "sld", "--concept", "cat", "--lora", str(lora),
                "--out", str(out)])
    assert code == 2
    assert "only weight-delta edits can be exported as LoRA" in capsys.readouterr().err
    assert not out.exists() and not lora.exists()


@pytest.mark.slow  # a fresh interpreter
def test_the_torchvision_notice_is_silenced_and_other_warnings_stay():
    import os
    import subprocess
    import sys
    code = ("import erasekit, logging\n"
            "from diffusers import StableDiffusionPipeline\n"
            "logging.getLogger('transformers.utils.import_utils').warning('another transformers warning')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CI": "true"})
    assert done.returncode == 0, done.stderr
    assert "torchvision" not in done.stderr and "another transformers warning" in done.stderr


def test_purify_writes_one_image_per_input_and_refuses_unreadable_ones(tiny_dirs, tmp_path, capsys):
    from PIL import Image
    model = str(tiny_dirs["sd1"])
    assert cli(["erase", "--model", model, "--method", "abo", "--concept", "cat", "--anchor", "dog", "--option",
                "steps=2", "--option", "sample_steps=2", "--out", str(tmp_path / "edit")]) == 0
    Image.new("RGB", (48, 48), (200, 30, 30)).save(tmp_path / "red.png")
    out = tmp_path / "purified"
    assert cli(["purify", "--model", model, "--image", str(tmp_path / "red.png"), "--edit", str(tmp_path / "edit"),
                "--steps", "3", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["purify.json", "red.png"]
    assert Image.open(out / "red.png").size == (32, 32)  # the model's resolution
    (tmp_path / "broken.png").write_bytes(b"not an image")
    none = tmp_path / "none"
    assert cli(["purify", "--model", model, "--image", str(tmp_path / "broken.png"), "--edit",
                str(tmp_path / "edit"), "--out", str(none)]) == 2
    assert "cannot read image" in capsys.readouterr().err and not none.exists()


def test_erase_options_read_numbers_as_python_does():
    from erasekit.cli.erase import parse_options
    assert parse_options(["lr=1e-3", "steps=20", "anchor=dog", "fast=true", "lora-rank=4"]) == \
        {"lr": 1e-3, "steps": 20, "anchor": "dog", "fast": True, "lora_rank": 4}
