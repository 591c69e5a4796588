import numpy as np
import pytest
import torch

import erasekit
from erasekit.concepts import ConceptError
from erasekit.generation import generate
from erasekit.methods.gie import GIEConfig, GIEController, splice


@pytest.fixture(scope="module")
def sd1(tiny_dirs):
    return erasekit.load_pipeline(tiny_dirs["sd1"])


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


@pytest.mark.parametrize("fast", [False, True])
def test_zero_strength_reproduces_plain_generation_and_negative_changes_it(sd1, fast):
    before = dict(sd1.unet.attn_processors)
    plain = generate(sd1, ["a photo of a cat", "a red dog"], [3, 4], steps=4, progress=False)
    zero = GIEController(sd1, "nude", GIEConfig(strength=0.0, fast=fast)).generate(["a photo of a cat", "a red dog"],
                                                                                   [3, 4], steps=4)
    assert [a.tobytes() for a in zero] == [b.tobytes() for b in plain]
    controller = GIEController(sd1, "nude", GIEConfig(strength=-3.0, fast=fast))
    inhibited = controller.generate(["a photo of a cat"], [3], steps=4)
    assert np.abs(np.asarray(inhibited[0], float) - np.asarray(plain[0], float)).mean() > 0.5
    assert dict(sd1.unet.attn_processors) == before  # processors restored
    layers = erasekit.find_cross_attention(sd1.unet)
    assert set(controller.recorded) == {layer.name for layer in layers}  # adapter features: one per layer
    assert all(v[0].shape == (1,) for v in controller.recorded.values())
