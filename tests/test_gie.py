import numpy as np
import pytest
import torch

import erasekit
from erasekit.concepts import ConceptError, resolve
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
    try:  # the public entry point: a plain pipeline call, GIE's hooks add branch 0
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
    spec = resolve(["nude"], keep=["a dog", "a red ball"])  # the keep span, from each family's own encoders
    spared = run(pipe, erasekit.erase(pipe, "gie", spec, strength=-3.0, fast=fast))
    assert not np.array_equal(pixels(spared[0]), pixels(inhibited[0]))
    assert dict(pipe.unet.attn_processors) == before  # processors restored
    assert generate(pipe, PROMPTS, SEEDS, steps=4, progress=False)[0].tobytes() == plain[0].tobytes()


def test_parity_and_fast_differ_only_by_the_second_branch():
    """With no copied maps and no injection the two modes agree; with injection they differ, since parity's P part
    is branch 0's output, computed beside branch 1 on the same latents but without the inhibitor in the layers
    before. After a single step the two agree to a level of 255, and part a little after a few (before issue #15
    branch 0 ran its own trajectory and they parted by more than 5 levels). (ShapeWorld: the tiny random models
    barely move in a few steps.)"""
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
    assert difference(4, -8.0)[1] > 0.5


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


# Parity mode as UNet hooks (issue #15): branch 0 joins every UNet call, branch 1's context is spliced without text.


@pytest.mark.parametrize("model", ["sd1", "shapeworld"])
def test_tail_splice_gives_the_images_of_the_text_spliced_prompt(tiny_dirs, monkeypatch, model):
    """Branch 1's context made from the context alone (its last n rows replaced by E's words) and the paper's P'
    spliced from the text (E's words before P's EoT, the rest shifted) hold the same rows in another order, which
    cross-attention cannot tell apart: the images agree to float tolerance. Half the steps are past the copy
    window, where branch 1 attends over its own context."""
    import erasekit.methods.gie.session as session_module
    pipe = erasekit.load_pipeline(tiny_dirs["sd1"] if model == "sd1" else None)
    prompts, target, strength = (PROMPTS, "red nude", -3.0) if model == "sd1" else \
        (["a red triangle", "a blue yield sign"], "triangle", -8.0)
    text_spliced = torch.stack([splice(pipe, prompt, target)[0] for prompt in prompts])
    tail = session_module.tail_splice
    seen = []

    def from_text(context, words):
        seen.append((tail(context, words), text_spliced.to(context)))
        return text_spliced.to(context)

    def images():
        return run(pipe, erasekit.erase(pipe, "gie", [target], strength=strength, cross_fraction=0.5), prompts,
                   SEEDS, steps=6)
    ours = images()
    monkeypatch.setattr(session_module, "tail_splice", from_text)
    reference = images()
    ours_context, text_context = seen[0]
    assert not torch.allclose(ours_context, text_context)  # other order ...
    torch.testing.assert_close(ours_context.sort(dim=1).values, text_context.sort(dim=1).values)  # ... same rows
    assert max(np.abs(pixels(a) - pixels(b)).max() for a, b in zip(ours, reference)) <= 1


@pytest.mark.parametrize("fast", [True, False])
def test_works_in_a_plain_image_to_image_call(sd1, fast):
    from diffusers import StableDiffusionImg2ImgPipeline
    img2img = StableDiffusionImg2ImgPipeline(**sd1.components)
    image = generate(sd1, "a cat", [0], steps=4, progress=False)[0]

    def call():
        return img2img("a cat", image=image, strength=0.6, num_inference_steps=5,
                       generator=torch.Generator().manual_seed(0)).images[0]
    plain = call()
    images = {}
    for strength in (0.0, -4.0):
        edit = erasekit.erase(sd1, "gie", ["nude"], strength=strength, fast=fast)
        edit.apply(sd1)  # the image-to-image pipeline shares sd1's UNet, as erasekit's persistence measure does
        try:
            images[strength] = call()
            # [uncond, prompt], and in parity mode the appended branch-0 row beside the prompt's (branch 1)
            assert active_session(sd1).pairs == [(1, None if fast else 2)]
        finally:
            edit.remove(sd1)
    assert np.abs(pixels(images[0.0]) - pixels(plain)).max() <= 1
    assert np.abs(pixels(images[-4.0]) - pixels(plain)).mean() > 0.5
    assert call().tobytes() == plain.tobytes()


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_parity_with_prompt_embeddings(tiny_dirs, family):
    """Embeddings given instead of text (as embedding attacks give them) run both branches: the same images as the
    prompts' own text, and shifted embeddings are inhibited too; the official rows need the text and say so."""
    pipe = erasekit.load_pipeline(tiny_dirs[family])
    encoded = erasekit.encode(pipe, PROMPTS)
    embeds = {"prompt_embeds": encoded.embeddings, "pooled_prompt_embeds": encoded.pooled}
    edit = erasekit.erase(pipe, "gie", ["nude"], strength=-3.0)
    from_text, from_embeds = run(pipe, edit), run(pipe, edit, None, **embeds)
    assert max(np.abs(pixels(a) - pixels(b)).max() for a, b in zip(from_text, from_embeds)) <= 1
    shifted = {**embeds, "prompt_embeds": encoded.embeddings + 0.5}  # as Ring-A-Bell adds its concept vector
    plain = generate(pipe, None, SEEDS, steps=4, progress=False, **shifted)
    inhibited = run(pipe, edit, None, **shifted)
    assert np.abs(pixels(inhibited[0]) - pixels(plain[0])).mean() > 0.5
    official = erasekit.erase(pipe, "gie", ["nude"], strength=-3.0, parity_rows=True)
    with pytest.raises(erasekit.ErasekitError, match="parity_rows needs each prompt's text"):
        run(pipe, official, None, **shifted)
    assert not erasekit.applied_edits(pipe)


@pytest.mark.parametrize("fast", [False, True])
def test_cross_attention_mask_is_honoured(sd1, fast):
    """UNet calls with `encoder_attention_mask` (which diffusers hands to cross-attention as `attention_mask`):
    masked context rows change nothing, whatever they hold, with the inhibitor on. In the copy window at w = 0 the
    output is the default processors' with the same mask; past both windows it is theirs on branch 1's context
    (parity: E's words in the last rows, attended)."""
    from erasekit.methods.gie.splice import tail_mask, tail_splice
    torch.manual_seed(0)
    sd1.scheduler.set_timesteps(4)
    length = sd1.tokenizer.model_max_length
    sample = torch.randn(2, sd1.unet.config.in_channels, 8, 8).repeat(2, 1, 1, 1)  # [uncond, cond] halves equal
    context = erasekit.encode(sd1, ["", "", *PROMPTS]).embeddings
    mask = torch.ones(4, length)
    mask[:, 8:] = 0
    noisy = context.clone()
    noisy[:, 8:] = torch.randn_like(noisy[:, 8:]) * 10
    words = erasekit.encode(sd1, ["nude"]).embeddings[0, 1:2]
    spliced, spliced_mask = context.clone(), mask.clone()
    if not fast:
        spliced[2:], spliced_mask[2:] = tail_splice(context[2:], words), tail_mask(mask[2:], 1)

    def unet(ctx, step, attention_mask=mask):
        with torch.no_grad():
            return sd1.unet(sample, sd1.scheduler.timesteps[step], ctx, encoder_attention_mask=attention_mask).sample
    plain = unet(context, 0)
    assert not torch.allclose(plain, unet(context, 0, None), atol=1e-4)  # the mask matters
    late = unet(spliced, 3, spliced_mask)
    for strength in (0.0, -3.0):
        edit = erasekit.erase(sd1, "gie", ["nude"], strength=strength, fast=fast, low_resolution_divisor=1,
                              cross_fraction=0.5)
        edit.apply(sd1)
        try:
            out = unet(context, 0)
            assert out.shape == plain.shape  # the appended branch-0 rows are dropped
            torch.testing.assert_close(unet(noisy, 0), out, rtol=1e-4, atol=1e-5)
            if strength == 0.0:
                torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-5)
            else:
                assert not torch.allclose(out, plain, atol=1e-4)
            torch.testing.assert_close(unet(noisy, 3), late, rtol=1e-4, atol=1e-5)
        finally:
            edit.remove(sd1)


def test_copied_maps_honour_the_attention_mask(sd1):
    """Low-resolution self-attention in the copy window, called with a mask: the branch-1 row uses its branch-0
    partner's masked map over its own values; the partner's output is diffusers' own."""
    from types import SimpleNamespace
    from diffusers.models.attention_processor import AttnProcessor2_0
    from erasekit.methods.gie.processor import GIEAttention
    attn = next(m for n, m in sd1.unet.named_modules() if n.endswith("attn1"))
    session = SimpleNamespace(pairs=[(0, 1)], active=lambda window: True)
    torch.manual_seed(0)
    x = torch.randn(2, 16, attn.to_q.in_features)
    bias = torch.zeros(2, 1, 16)
    bias[:, :, 5:9] = -10000.0  # as the UNet turns a 0/1 mask into a bias

    def split(t):  # (tokens, inner) → (heads, tokens, head_dim)
        return t.view(t.shape[0], attn.heads, -1).transpose(0, 1)
    with torch.no_grad():
        out = GIEAttention(session, "attn1", cross=False)(attn, x, attention_mask=bias)
        probs = (split(attn.to_q(x[1])) @ split(attn.to_k(x[1])).transpose(-1, -2) * attn.scale + bias[1]).softmax(-1)
        expected = attn.to_out[0]((probs @ split(attn.to_v(x[0]))).transpose(0, 1).reshape(16, -1))
        torch.testing.assert_close(out[0], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[1], AttnProcessor2_0()(attn, x[1:], attention_mask=bias[1:])[0],
                                   rtol=1e-4, atol=1e-5)
