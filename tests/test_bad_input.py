"""Each bad input gives one clear error, and nothing half-written on disk."""
import json
import shutil

import pytest
import torch

import erasekit
from erasekit.cli.main import main as cli


def test_missing_model_path(tmp_path):
    with pytest.raises(erasekit.ModelError, match="does not exist"):
        erasekit.load_pipeline(tmp_path / "nope")


def test_folder_without_model_index(tmp_path):
    with pytest.raises(erasekit.ModelError, match="model_index.json"):
        erasekit.load_pipeline(tmp_path)


def test_unet_without_cross_attention(tiny_dirs, tmp_path):
    """A pipeline folder whose UNet has no cross-attention is refused with a clear message."""
    from diffusers import UNet2DConditionModel
    folder = tmp_path / "nocross"
    shutil.copytree(tiny_dirs["sd1"], folder)
    config = UNet2DConditionModel.load_config(folder / "unet")
    config.update(down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
                  mid_block_type=None)
    UNet2DConditionModel.from_config(config).save_pretrained(folder / "unet", safe_serialization=True)
    with pytest.raises(erasekit.ModelError, match="no cross-attention"):
        erasekit.load_pipeline(folder)


def test_empty_prompt_list(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    with pytest.raises(erasekit.PromptError, match="empty"):
        erasekit.encode(pipe, [])


def test_too_long_prompt_warns_with_what_was_cut(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    limit = pipe.tokenizer.model_max_length
    words = ["cat"] * (limit - 2) + ["dog", "red"]
    with pytest.warns(UserWarning, match=r"cut 'dog red'"):
        enc = erasekit.encode(pipe, [" ".join(words)])
    assert enc.input_ids.shape[1] == limit
    assert int(enc.eot_index[0]) == limit - 1


def test_cli_bad_model_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli(["generate", "--model", str(tmp_path / "missing"), "--prompt", "a cat", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "does not exist" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_corrupted_edit_exits_2_and_writes_nothing(tiny_dirs, tmp_path, capsys):
    from erasekit.edits import WeightDelta
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    name = "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    edit = WeightDelta.create(pipe, {name: torch.ones_like(dict(pipe.unet.named_parameters())[name])},
                              method="test", concepts=["cat"])
    edit.save(tmp_path / "edit")
    blob = (tmp_path / "edit" / "tensors.safetensors").read_bytes()
    (tmp_path / "edit" / "tensors.safetensors").write_bytes(blob[: len(blob) // 2])  # truncated
    out = tmp_path / "out"
    code = cli(["generate", "--model", str(tiny_dirs["sd1"]), "--edit", str(tmp_path / "edit"), "--prompt", "a cat",
                "--out", str(out)])
    assert code == 2
    assert "corrupted" in capsys.readouterr().err
    assert not out.exists()


def test_cli_empty_prompt(tmp_path, capsys):
    assert cli(["generate", "--prompt", "  ", "--out", str(tmp_path / "o")]) == 2
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_edit_json_corrupted(tiny_dirs, tmp_path):
    from erasekit.edits import WeightDelta
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    name = next(n for n, _ in pipe.unet.named_parameters() if n.endswith("attn2.to_v.weight"))
    WeightDelta.create(pipe, {name: torch.zeros_like(dict(pipe.unet.named_parameters())[name])},
                       method="test", concepts=["cat"]).save(tmp_path / "e")
    (tmp_path / "e" / "edit.json").write_text("{not json")
    with pytest.raises(erasekit.EditError, match="corrupted"):
        erasekit.load_edit(tmp_path / "e")
    with pytest.raises(erasekit.EditError, match="not an erasekit edit"):
        erasekit.load_edit(tmp_path)


def test_attack_cli_writes_images_and_success_rates(tiny_dirs, tmp_path, capsys):
    out = tmp_path / "attack"
    assert cli(["attack", "--model", str(tiny_dirs["sd1"]), "--concept", "nude", "--strengths", "0", "3",
                "--num-images", "2", "--out", str(out)]) == 0
    record = json.loads((out / "attack.json").read_text())
    assert set(record["success_rate"]) == {"eta=0", "eta=3"} and record["detector"] == "nudenet@0.6"
    assert sorted(p.name for p in (out / "eta=3").iterdir()) == ["0000.png", "0001.png"]
    assert cli(["attack", "--model", str(tiny_dirs["sd1"]), "--concept", "nude", "--num-images", "0",
                "--out", str(tmp_path / "none")]) == 2
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("option, value", [("--guidance", "nan"), ("--guidance", "inf"), ("--steps", "0"),
                                           ("--num-images", "-3"), ("--seed", "1.5")])
def test_cli_refuses_non_finite_and_out_of_range_numbers_when_parsing(tmp_path, capsys, option, value):
    out = tmp_path / "o"
    assert cli(["generate", "--prompt", "a red triangle", option, value, "--out", str(out)]) == 2
    assert option in capsys.readouterr().err
    assert not out.exists()


def one_line_error(capsys, command: list[str], out) -> str:
    """Run a command that must fail: exit 2, one line on stderr, nothing written to `out`. Returns the line."""
    assert cli([*command, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    return err


def test_steps_beyond_the_scheduler_are_one_line_errors(tmp_path, capsys):
    err = one_line_error(capsys, ["generate", "--prompt", "a red triangle", "--steps", "9999"], tmp_path / "o")
    assert "steps must be a whole number from 1 to 1000" in err


def test_a_prompt_cut_to_the_token_limit_warns_once_in_one_line(tmp_path, capsys):
    words = " ".join(["red triangle"] * 250)  # 500 words
    assert cli(["generate", "--prompt", words, "--num-images", "2", "--steps", "2", "--out", str(tmp_path / "o")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "tokens dropped" in warnings[0]
    dropped = int(warnings[0].split(" tokens dropped")[0].rsplit(" ", 1)[1])
    assert dropped == 500 - (32 - 2)  # ShapeWorld reads 32 tokens: SoT, 30 words, EoT


def test_a_concept_the_model_cannot_represent_is_refused(tmp_path, capsys):
    err = one_line_error(capsys, ["erase", "--method", "uce", "--concept", "zzzz qqq"], tmp_path / "e")
    assert "cannot represent 'zzzz', 'qqq'" in err


def test_words_split_into_pieces_warn_on_a_real_tokenizer(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    with pytest.warns(UserWarning, match="splits 'zebra' into pieces"):
        erasekit.erase(pipe, "uce", ["zebra cat"])


def test_resolve_leaves_the_callers_spec_alone():
    from erasekit.concepts import preset, resolve
    spec = preset("shapeworld/triangle")
    resolved = resolve(spec, anchor="", preserve=["circle"])
    assert spec.anchors == ["diamond"] and "circle" in spec.preserve and len(spec.preserve) == 5
    assert resolved.anchors == [""] and resolved.preserve == ["circle"]
