import pytest
import torch

import erasekit
from erasekit.models import detect_family, find_cross_attention, in_execution_order
from erasekit.testing.tiny import sd14_unet_config


def test_family_detected_from_config(tiny_pipe, family):
    assert tiny_pipe.erasekit_family == family
    expected = "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline"
    assert type(tiny_pipe).__name__ == expected


def test_cross_attention_layers_found_by_flag(tiny_pipe):
    layers = find_cross_attention(tiny_pipe.unet)
    flagged = [n for n, m in tiny_pipe.unet.named_modules() if getattr(m, "is_cross_attention", False)]
    assert [layer.name for layer in layers] == flagged  # registration order = named_modules order
    assert [layer.registration_index for layer in layers] == list(range(len(layers)))
    assert all(layer.name.endswith("attn2") for layer in layers)
    assert sorted(layer.execution_index for layer in layers) == list(range(len(layers)))


def test_execution_order_matches_a_real_forward(tiny_pipe):
    layers = find_cross_attention(tiny_pipe.unet)
    called = []
    hooks = [layer.module.register_forward_hook(lambda m, i, o, name=layer.name: called.append(name))
             for layer in layers]
    enc = erasekit.encode(tiny_pipe, ["a photo of a cat"])
    unet = tiny_pipe.unet
    sample = torch.randn(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    kwargs = {}
    if tiny_pipe.erasekit_family == "sdxl":
        kwargs["added_cond_kwargs"] = {"text_embeds": enc.pooled, "time_ids": torch.zeros(1, 6)}
    with torch.no_grad():
        unet(sample, torch.tensor([10]), enc.embeddings, **kwargs)
    for h in hooks:
        h.remove()
    assert called == [layer.name for layer in in_execution_order(layers)]
    # Registration order (down, up, mid) differs from execution order (down, mid, up) when there is a mid block.
    if any(layer.name.startswith("mid_block") for layer in layers):
        assert [layer.name for layer in layers] != called


def test_kv_shapes_match_text_embeddings(tiny_pipe):
    enc = erasekit.encode(tiny_pipe, ["a red cat"])
    for layer in find_cross_attention(tiny_pipe.unet):
        assert layer.d_text == enc.embeddings.shape[-1]
        assert layer.to_v.weight.shape == (layer.d_out, layer.d_text)


def test_encode_equals_the_pipeline_own_encoding(tiny_pipe):
    prompts = ["a photo of a cat", "a red dog"]
    enc = erasekit.encode(tiny_pipe, prompts)
    ours = tiny_pipe.encode_prompt(prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    torch.testing.assert_close(enc.embeddings, ours[0], rtol=0, atol=0)
    if tiny_pipe.erasekit_family == "sdxl":
        torch.testing.assert_close(enc.pooled, ours[2], rtol=0, atol=0)


def test_eot_index_from_ids_for_each_padding(tiny_pipe):
    tok = tiny_pipe.tokenizer
    prompts = ["a cat", "a photo of a red dog"]
    enc = erasekit.encode(tiny_pipe, prompts)
    for row, prompt, eot in zip(enc.input_ids, prompts, enc.eot_index):
        n_words = len(tok(prompt, add_special_tokens=False).input_ids)
        assert int(eot) == n_words + 1  # [SoT] words [EoT]
        assert int(row[eot]) == tok.eos_token_id
        assert (row[:eot] != tok.eos_token_id).all()
        assert enc.attention_mask[0 if prompt == prompts[0] else 1, : eot + 1].all()
    pad_id = tok.pad_token_id
    if tiny_pipe.erasekit_family == "sd2":
        assert pad_id == 0 and int(enc.input_ids[0, -1]) == 0
    else:
        assert pad_id == tok.eos_token_id and int(enc.input_ids[0, -1]) == tok.eos_token_id


def test_sdxl_tokenizers_agree_on_eot(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sdxl"])
    a = pipe.tokenizer(["a red cat"], padding="max_length", return_tensors="pt").input_ids
    b = pipe.tokenizer_2(["a red cat"], padding="max_length", return_tensors="pt").input_ids
    assert erasekit.models.first_eot_index(a, pipe.tokenizer.eos_token_id).item() == \
        erasekit.models.first_eot_index(b, pipe.tokenizer_2.eos_token_id).item()
    assert pipe.tokenizer_2.pad_token_id == 0


def test_save_load_round_trip_gives_identical_weights_and_images(tiny_pipe, tmp_path):
    from erasekit.sampling import generate
    first = generate(tiny_pipe, "a photo of a cat", [3], steps=2, progress=False)[0]
    tiny_pipe.save_pretrained(tmp_path / "copy", safe_serialization=True)
    again = erasekit.load_pipeline(tmp_path / "copy")
    assert again.erasekit_family == tiny_pipe.erasekit_family
    for (name, a), (_, b) in zip(tiny_pipe.unet.state_dict().items(), again.unet.state_dict().items()):
        assert torch.equal(a, b), name
    second = generate(again, "a photo of a cat", [3], steps=2, progress=False)[0]
    assert first.tobytes() == second.tobytes()


def test_sd14_unet_has_16_cross_attention_layers():
    from diffusers import UNet2DConditionModel
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(sd14_unet_config())
    layers = find_cross_attention(unet)
    assert len(layers) == 16
    assert {layer.d_text for layer in layers} == {768}
    assert sorted({layer.d_out for layer in layers}) == [320, 640, 1280]
    assert sum(1 for layer in layers if layer.d_out == 1280) == 2 + 1 + 3  # down, mid, up
    assert [layer.name.split(".")[0] for layer in in_execution_order(layers)] == \
        ["down_blocks"] * 6 + ["mid_block"] + ["up_blocks"] * 9


def test_detect_family_needs_a_unet(tmp_path):
    with pytest.raises(erasekit.ModelError, match="no UNet"):
        detect_family({"vae": ["diffusers", "AutoencoderKL"]}, tmp_path, str(tmp_path))


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_encoding_from_token_embeddings_equals_encoding_and_carries_gradients(tiny_dirs, family):
    from erasekit.models.text import encode_token_embeddings, token_embeddings, tokenize
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    ids, _ = tokenize(pipe.tokenizer, ["a red cat", "a dog"])
    soft = token_embeddings(pipe, ids).detach().clone().requires_grad_(True)
    encoded = encode_token_embeddings(pipe, ids, soft)
    torch.testing.assert_close(encoded, erasekit.encode(pipe, ["a red cat", "a dog"]).embeddings)
    encoded.sum().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
