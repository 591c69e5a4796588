import numpy as np
import pytest
import torch

import erasekit
from erasekit.concepts import ConceptError
from erasekit.edits import active_session
from erasekit.sampling import generate
from erasekit.methods.gie import ScaleAdapter, save_adapter, splice

PROMPTS, SEEDS = ["a photo of a cat", "a red dog"], [3, 4]


@pytest.fixture(scope="module")
def sd1(tiny_dirs):
    return erasekit.load_pipeline(tiny_dirs["sd1"])


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=float)


def run(pipe, edit, prompts=PROMPTS, seeds=SEEDS, steps=4, **options):
    edit.apply(pipe)
    try:  # the public entry point, which routes to GIE's two-branch sampler
        return erasekit.generate(pipe, prompts, seeds, steps=steps, progress=False, **options)
    finally:
        edit.remove(pipe)


def test_splice_puts_the_target_before_the_prompts_eot(sd1):
    spliced, c_star, positions = splice(sd1, "a photo of a cat", "nude")
    plain = erasekit.encode(sd1, ["a photo of a cat"])
    star = erasekit.encode(sd1, ["nude"])
    eot = int(plain.eot_index[0])
    assert positions == [eot]
    torch.testing.assert_close(spliced[:eot], plain.embeddings[0, :eot])      # SoT and P's words
    torch.testing.assert_close(spliced[eot], star.embeddings[0, 1])           # E's word, from Enc(E)
    torch.testing.assert_close(spliced[eot + 1], plain.embeddings[0, eot])    # P's EoT follows
    torch.testing.assert_close(c_star, star.embeddings[0])


def test_target_that_does_not_fit_says_how_much_fits(sd1):
    prompt = " ".join(["cat"] * 13)  # 13 of the tiny tokenizer's 16 positions, with SoT and EoT: 1 left
    with pytest.raises(ConceptError, match="only 1 fit"):
        splice(sd1, prompt, "red nude dog")
    edit = erasekit.erase(sd1, "gie", ["red nude dog"])
    with pytest.raises(ConceptError, match="only 1 fit"):
        run(sd1, edit, [prompt], [0])


def test_target_that_tokenises_to_nothing_is_refused(sd1):
    with pytest.raises(ConceptError, match="tokenises to nothing"):
        erasekit.erase(sd1, "gie", ["nude"], target="   ")


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("fast", [False, True])
def test_zero_strength_reproduces_plain_generation_and_negative_changes_it(tiny_dirs, family, fast):
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    before = dict(pipe.unet.attn_processors)
    plain = generate(pipe, PROMPTS, SEEDS, steps=4, progress=False)
    zero = run(pipe, erasekit.erase(pipe, "gie", ["nude"], strength=0.0, fast=fast))
    # parity runs a batch twice as large, whose matmuls may round differently: at most one level of 255
    assert max(np.abs(pixels(a) - pixels(b)).max() for a, b in zip(zero, plain)) <= 1
    inhibited = run(pipe, erasekit.erase(pipe, "gie", ["nude"], strength=-3.0, fast=fast))
    assert np.abs(pixels(inhibited[0]) - pixels(plain[0])).mean() > 0.5
    assert dict(pipe.unet.attn_processors) == before  # processors restored
    assert generate(pipe, PROMPTS, SEEDS, steps=4, progress=False)[0].tobytes() == plain[0].tobytes()


def test_parity_and_fast_differ_only_by_the_second_branch():
    """With no copied maps and no injection the two modes agree; with injection they differ, since parity's
    branch 1 follows its own trajectory while reading branch 0's maps. So with injection they still agree after a
    single step, when both branches share their latents, and part after a few. (ShapeWorld: the tiny random
    models barely move in a few steps.)"""
    pipe = erasekit.load_pipeline()
    prompts, seeds = ["a red triangle", "a blue yield sign"], [3, 4]

    def images(strength, fast, steps):
        edit = erasekit.erase(pipe, "gie", ["triangle"], strength=strength, fast=fast, self_fraction=0.0)
        return run(pipe, edit, prompts, seeds, steps=steps)

    def difference(steps, strength):
        a, b = images(strength, False, steps), images(strength, True, steps)
        return (max(np.abs(pixels(x) - pixels(y)).max() for x, y in zip(a, b)),
                np.mean([np.abs(pixels(x) - pixels(y)).mean() for x, y in zip(a, b)]))
    # two-branch batches may round differently: at most one level of 255
    assert difference(4, 0.0)[0] <= 1
    assert difference(1, -8.0)[0] <= 1
    assert difference(4, -8.0)[1] > 5


def test_fast_mode_works_in_a_plain_image_to_image_call(sd1):
    from diffusers import StableDiffusionImg2ImgPipeline
    img2img = StableDiffusionImg2ImgPipeline(**sd1.components)
    image = generate(sd1, "a cat", [0], steps=4, progress=False)[0]

    def call():
        return img2img("a cat", image=image, strength=0.6, num_inference_steps=5,
                       generator=torch.Generator().manual_seed(0)).images[0]
    plain = call()
    edit = erasekit.erase(sd1, "gie", ["nude"], strength=-4.0, fast=True)
    edit.apply(sd1)  # the image-to-image pipeline shares sd1's UNet, as erasekit's persistence measure does
    try:
        inhibited = call()
    finally:
        edit.remove(sd1)
    assert np.abs(pixels(inhibited) - pixels(plain)).mean() > 0.5
    assert call().tobytes() == plain.tobytes()


def test_edit_saves_and_loads_with_its_adapter(sd1, tmp_path):
    layers = len(erasekit.find_cross_attention(sd1.unet))
    adapter = ScaleAdapter(layers)
    torch.nn.init.constant_(adapter.mlp[-1].bias, 2.0)
    save_adapter(adapter, tmp_path / "adapter")
    edit = erasekit.erase(sd1, "gie", ["nude"], adapter=str(tmp_path / "adapter"))
    edit.save(tmp_path / "edit")
    loaded = erasekit.load_edit(tmp_path / "edit")
    loaded.apply(sd1)
    try:
        generate(sd1, PROMPTS, SEEDS, steps=2, progress=False)
        session = active_session(sd1)
        assert session.features().shape == (2, 1, layers)  # (images, E tokens, layers), from the probe pass
        expected = -adapter(session.features())
        torch.testing.assert_close(session.row_weights, expected)
        assert (session.row_weights < 0).all()
        probed = session.features()
    finally:
        loaded.remove(sd1)
    zero = erasekit.erase(sd1, "gie", ["nude"], strength=0.0)
    zero.apply(sd1)
    try:  # the probe sees what the adapter's training run at |w| = 0 recorded
        generate(sd1, PROMPTS, SEEDS, steps=2, progress=False)
        torch.testing.assert_close(active_session(sd1).features(), probed)
    finally:
        zero.remove(sd1)


def test_adapter_for_another_layer_count_is_refused(sd1, tmp_path):
    save_adapter(ScaleAdapter(16), tmp_path / "adapter")
    edit = erasekit.erase(sd1, "gie", ["nude"], adapter=str(tmp_path / "adapter"))
    with pytest.raises(erasekit.EditError, match="trained for 16 cross-attention layers"):
        edit.apply(sd1)
    assert not erasekit.applied_edits(sd1)


def test_processor_edit_on_a_unet_without_attention_layers_is_refused(sd1, monkeypatch):
    edit = erasekit.erase(sd1, "gie", ["nude"])
    monkeypatch.setattr("erasekit.edits.sampling_time.select_attention", lambda unet, layers: {})
    with pytest.raises(erasekit.EditError, match="has no attention layers"):
        edit.apply(sd1)
