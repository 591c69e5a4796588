import pytest
import torch

import erasekit
from erasekit.edits import SamplingSession, SamplingTimeEdit, WeightDelta, applied_edits, register_session
from erasekit.sampling import generate
from erasekit.models import find_cross_attention


def kv_names(pipe):
    return [f"{layer.name}.{p}.weight" for layer in find_cross_attention(pipe.unet) for p in ("to_k", "to_v")]


def random_delta(pipe, seed, rank=None, names=None):
    g = torch.Generator().manual_seed(seed)
    params = dict(pipe.unet.named_parameters())
    deltas = {}
    for name in names or kv_names(pipe):
        out, inp = params[name].shape
        if rank:
            deltas[name] = (torch.randn(out, rank, generator=g) * 0.1, torch.randn(rank, inp, generator=g) * 0.1)
        else:
            deltas[name] = torch.randn(out, inp, generator=g) * 0.1
    return WeightDelta.create(pipe, deltas, method="test", concepts=[f"c{seed}"], config={"seed": seed})


def snapshot(pipe):
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_apply_changes_weights_and_remove_restores_bit_exactly(tiny_pipe):
    before = snapshot(tiny_pipe)
    edit = random_delta(tiny_pipe, 1)
    edit.apply(tiny_pipe)
    name = kv_names(tiny_pipe)[0]
    torch.testing.assert_close(dict(tiny_pipe.unet.named_parameters())[name], before[name] + edit.delta(name))
    assert not torch.equal(dict(tiny_pipe.unet.named_parameters())[name], before[name])
    edit.remove(tiny_pipe)
    assert_same(snapshot(tiny_pipe), before)
    assert applied_edits(tiny_pipe) == []


def test_low_rank_delta_is_up_times_down(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = random_delta(pipe, 2, rank=2)
    name = kv_names(pipe)[0]
    up, down = edit.tensors["up.unet." + name], edit.tensors["down.unet." + name]  # names gain their component
    torch.testing.assert_close(edit.delta(name), up @ down)
    assert torch.linalg.matrix_rank(edit.delta(name)) == 2


def test_stacked_edits_remove_in_any_order(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    before = snapshot(pipe)
    names = kv_names(pipe)
    a = random_delta(pipe, 1, names=names[:4])
    b = random_delta(pipe, 2, names=names[2:])  # overlaps a on names[2:4]
    a.apply(pipe)
    b.apply(pipe)
    params = dict(pipe.unet.named_parameters())
    torch.testing.assert_close(params[names[3]], before[names[3]] + a.delta(names[3]) + b.delta(names[3]))
    a.remove(pipe)  # the first one out first
    only_b = snapshot(pipe)
    b.remove(pipe)
    assert_same(snapshot(pipe), before)
    b.apply(pipe)
    assert_same(snapshot(pipe), only_b)


def test_save_load_round_trip_and_same_images(tiny_dirs, tmp_path):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = random_delta(pipe, 3, rank=1)
    edit.save(tmp_path / "edit")
    loaded = erasekit.load_edit(tmp_path / "edit")
    assert isinstance(loaded, WeightDelta)
    assert loaded.metadata == edit.metadata
    assert loaded.tensors.keys() == edit.tensors.keys()
    edit.apply(pipe)
    first = generate(pipe, "a cat", [0], steps=2, progress=False)[0]
    edit.remove(pipe)
    loaded.apply(pipe)
    assert generate(pipe, "a cat", [0], steps=2, progress=False)[0].tobytes() == first.tobytes()
    assert sorted(p.name for p in (tmp_path / "edit").iterdir()) == ["edit.json", "tensors.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["edit"]  # no temporary folder left behind


def test_save_refuses_to_overwrite_unless_asked(tiny_dirs, tmp_path):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = random_delta(pipe, 4)
    edit.save(tmp_path / "e")
    with pytest.raises(erasekit.EditError, match="already exists"):
        edit.save(tmp_path / "e")
    edit.save(tmp_path / "e", overwrite=True)
    assert erasekit.load_edit(tmp_path / "e").metadata == edit.metadata


def test_refuses_model_with_other_weights(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = random_delta(pipe, 5)
    other = erasekit.load_pipeline(tiny_dirs["sd1"])
    with torch.no_grad():
        other.unet.mid_block.attentions[0].transformer_blocks[0].attn2.to_k.weight.add_(1e-3)
    with pytest.raises(erasekit.EditError, match="other weights"):
        edit.apply(other)
    assert applied_edits(other) == []


def test_refuses_model_with_other_architecture(tiny_dirs):
    sd1 = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = random_delta(sd1, 6)
    sd2 = erasekit.load_pipeline(tiny_dirs["sd2"])
    before = snapshot(sd2)
    with pytest.raises(erasekit.EditError, match="another model architecture"):
        edit.apply(sd2)
    assert_same(snapshot(sd2), before)


def test_shape_mismatch_is_refused_even_without_architecture_check(tiny_dirs):
    sd1 = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = random_delta(sd1, 7)
    edit.metadata["fingerprint"].pop("architecture")
    sd2 = erasekit.load_pipeline(tiny_dirs["sd2"])
    with pytest.raises(erasekit.EditError, match="does not fit|does not have"):
        edit.apply(sd2)


def test_edit_made_on_a_stack_fits_the_same_base(tiny_dirs):
    """Independent edits made from the same base model can be stacked: the fingerprint is of the base weights."""
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    a = random_delta(pipe, 8)
    b = random_delta(pipe, 9)
    a.apply(pipe)
    b.apply(pipe)
    c = random_delta(pipe, 10)  # made while a and b are applied: still fingerprinted on the base
    b.remove(pipe)
    a.remove(pipe)
    c.apply(pipe)
    assert applied_edits(pipe) == [c]


calls = []


@register_session("test-scale-values")
class ScaledValues(SamplingSession):
    """Cross-attention output times a factor: the smallest inference-time method."""

    def processor(self, name, module):
        from diffusers.models.attention_processor import AttnProcessor2_0
        inner, factor = AttnProcessor2_0(), self.config["factor"]

        def process(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kw):
            calls.append(name)
            return inner(attn, hidden_states, encoder_hidden_states, attention_mask, **kw) * factor
        return process


def test_processor_edit_changes_images_and_restores_processors(tiny_pipe, tmp_path):
    before = dict(tiny_pipe.unet.attn_processors)
    base = generate(tiny_pipe, "a cat", [0], steps=2, progress=False)[0]
    edit = SamplingTimeEdit(method="test", concepts=["cat"], config={"session": "test-scale-values",
                                                                    "factor": 0.0})
    edit.save(tmp_path / "p")
    loaded = erasekit.load_edit(tmp_path / "p")
    calls.clear()
    loaded.apply(tiny_pipe)
    edited = generate(tiny_pipe, "a cat", [0], steps=2, progress=False)[0]
    assert set(calls) == {layer.name for layer in find_cross_attention(tiny_pipe.unet)}
    assert edited.tobytes() != base.tobytes()
    loaded.remove(tiny_pipe)
    assert dict(tiny_pipe.unet.attn_processors) == before
    assert generate(tiny_pipe, "a cat", [0], steps=2, progress=False)[0].tobytes() == base.tobytes()


def test_unknown_processor_is_refused(tiny_dirs):
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = SamplingTimeEdit(method="x", concepts=["c"], config={"session": "nope"})
    with pytest.raises(erasekit.EditError, match="not available"):
        edit.apply(pipe)


class LowRankOnInput(torch.nn.Module):
    """x + U Vᵀ x, the Safe-Adapter shape, for the adapter-kind tests."""

    def __init__(self, config, target):
        super().__init__()
        d, r = target.in_features, config["rank"]
        self.down = torch.nn.Linear(d, r, bias=False)
        self.up = torch.nn.Linear(r, d, bias=False)

    def forward(self, x):
        return x + self.up(self.down(x))


def test_adapter_edit_round_trip_changes_images_and_removes_cleanly(tiny_dirs, tmp_path):
    from erasekit.edits import AdapterEdit, register_adapter
    from erasekit.models import fingerprint
    register_adapter("test-lowrank-input")(LowRankOnInput)
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    before = snapshot(pipe)
    base = generate(pipe, "a cat", [0], steps=2, progress=False)[0]
    targets = [f"{layer.name}.to_k" for layer in find_cross_attention(pipe.unet)]
    modules = dict(pipe.unet.named_modules())
    torch.manual_seed(0)
    adapters = {t: LowRankOnInput({"rank": 2}, modules[t]) for t in targets}
    edit = AdapterEdit.from_modules(adapters, adapter="test-lowrank-input", mode="input", method="test",
                                    concepts=["cat"], config={"rank": 2}, fingerprint=fingerprint(pipe, []))
    edit.save(tmp_path / "a")
    loaded = erasekit.load_edit(tmp_path / "a")
    loaded.apply(pipe)
    assert generate(pipe, "a cat", [0], steps=2, progress=False)[0].tobytes() != base.tobytes()
    x = torch.randn(3, modules[targets[0]].in_features)
    target = modules[targets[0]]
    torch.testing.assert_close(target(x), torch.nn.functional.linear(adapters[targets[0]](x), target.weight,
                                                                     target.bias))
    loaded.remove(pipe)
    assert_same(snapshot(pipe), before)  # weights were never touched
    assert generate(pipe, "a cat", [0], steps=2, progress=False)[0].tobytes() == base.tobytes()


def test_adapter_for_missing_modules_is_refused(tiny_dirs):
    from erasekit.edits import AdapterEdit
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = AdapterEdit({"nowhere.to_k::down.weight": torch.zeros(1, 1)}, method="t", concepts=["c"],
                       config={"adapter": "test-lowrank-input", "mode": "input"})
    with pytest.raises(erasekit.EditError, match="does not have|not available"):
        edit.apply(pipe)


def test_a_pipeline_built_from_the_components_sees_the_applied_edits(tiny_dirs):
    """Edit state lives on the UNet, so an image-to-image pipeline made from `pipe.components` sees the same
    stack, and removing the edit through it restores the shared UNet."""
    from diffusers import StableDiffusionImg2ImgPipeline
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    before = snapshot(pipe)
    edit = random_delta(pipe, 3)
    edit.apply(pipe)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    assert applied_edits(img2img) == [edit]
    with pytest.raises(erasekit.EditError, match="already applied"):
        edit.apply(img2img)
    edit.remove(img2img)
    assert applied_edits(pipe) == []
    assert_same(snapshot(pipe), before)


def test_deltas_on_text_encoders_change_the_encoding_and_export_as_diffusers_lora(tiny_dirs, tmp_path):
    """Names carry their component; a LoRA over UNet and text encoder loads in plain diffusers and gives the
    same UNet prediction as the applied edit."""
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    g = torch.Generator().manual_seed(0)
    q, v = (next(n for n, _ in pipe.text_encoder.named_parameters() if n.endswith(suffix))
            for suffix in ("layers.0.self_attn.q_proj.weight", "layers.1.mlp.fc1.weight"))
    kv = kv_names(pipe)[0]
    names = {"text_encoder." + q: pipe.text_encoder.get_parameter(q), "text_encoder." + v:
             pipe.text_encoder.get_parameter(v), "unet." + kv: pipe.unet.get_parameter(kv)}
    deltas = {n: (torch.randn(p.shape[0], 2, generator=g) * 0.3, torch.randn(2, p.shape[1], generator=g) * 0.3)
              for n, p in names.items()}
    edit = WeightDelta.create(pipe, deltas, method="test", concepts=["c"])
    assert edit.param_names == sorted(names)
    plain_encoding = erasekit.encode(pipe, ["a red cat"]).embeddings
    edit.apply(pipe)
    assert not torch.allclose(erasekit.encode(pipe, ["a red cat"]).embeddings, plain_encoding)
    ours = unet_prediction(pipe)
    edit.remove(pipe)
    torch.testing.assert_close(erasekit.encode(pipe, ["a red cat"]).embeddings, plain_encoding, rtol=0, atol=0)
    edit.export_lora(tmp_path / "lora.safetensors")
    plain = erasekit.load_pipeline(tiny_dirs["sd1"])
    plain.load_lora_weights(str(tmp_path / "lora.safetensors"))
    torch.testing.assert_close(unet_prediction(plain), ours, rtol=1e-4, atol=1e-5)


def unet_prediction(pipe):
    enc = erasekit.encode(pipe, ["a red cat"])
    unet = pipe.unet
    sample = torch.randn(1, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size,
                         generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), enc.embeddings).sample


def test_an_edit_written_by_erasekit_0_1_still_fits_its_model(tiny_dirs, tmp_path):
    """0.1 named UNet parameters bare and hashed every element; such files load, apply and refuse other
    weights as before."""
    import json
    from erasekit.models.fingerprint import tensors_hash
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    edit = random_delta(pipe, 4, names=kv_names(pipe)[:2])
    edit.save(tmp_path / "e")
    from safetensors.torch import load_file, save_file
    tensors = {k.replace("delta.unet.", "delta."): t for k, t in load_file(tmp_path / "e/tensors.safetensors").items()}
    save_file(tensors, tmp_path / "e/tensors.safetensors")
    record = json.loads((tmp_path / "e/edit.json").read_text())
    params = dict(pipe.unet.named_parameters())
    record["fingerprint"] = {**{k: v for k, v in record["fingerprint"].items() if k != "hash"},
                             "weights": tensors_hash({n: params[n] for n in kv_names(pipe)[:2]}),
                             "shapes": {n: list(params[n].shape) for n in kv_names(pipe)[:2]}}
    from erasekit.edits.base import _sha256
    record["tensors_sha256"] = _sha256(tmp_path / "e/tensors.safetensors")
    (tmp_path / "e/edit.json").write_text(json.dumps(record))
    legacy = erasekit.load_edit(tmp_path / "e")
    assert legacy.param_names == ["unet." + n for n in kv_names(pipe)[:2]]
    before = snapshot(pipe)
    legacy.apply(pipe)
    torch.testing.assert_close(pipe.unet.get_parameter(kv_names(pipe)[0]),
                               before[kv_names(pipe)[0]] + edit.delta(kv_names(pipe)[0]))
    legacy.remove(pipe)
    with torch.no_grad():
        pipe.unet.get_parameter(kv_names(pipe)[1]).add_(0.01)
    with pytest.raises(erasekit.EditError, match="other weights"):
        legacy.apply(pipe)


def test_the_evaluation_fingerprint_sees_every_weight(tiny_dirs):
    from erasekit.models.fingerprint import model_fingerprint
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"])
    before = model_fingerprint(pipe)["weights"]
    for module, name in ((pipe.unet, "conv_in.weight"), (pipe.text_encoder, "final_layer_norm.weight")):
        weight = module.get_parameter(name)
        saved = weight.detach().clone()
        with torch.no_grad():
            weight.view(-1)[-1] += 1e-3  # a single element of a weight no closed-form edit touches
        assert model_fingerprint(pipe)["weights"] != before
        with torch.no_grad():
            weight.copy_(saved)
    assert model_fingerprint(pipe)["weights"] == before
