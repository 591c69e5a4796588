import random

import numpy as np
import pytest

from erasekit.shapeworld import domain
from erasekit.shapeworld.captions import caption, prompt
from erasekit.shapeworld.domain import LABELS, SHAPES, TEXTURES, Scene
from erasekit.shapeworld.render import render, sample_scene
from erasekit.shapeworld.tokenizer import save_tokenizer


def test_vocabulary_sizes():
    assert len(SHAPES) >= 6 and {"circle", "square", "triangle", "cross"} <= set(LABELS["shape"])
    assert domain.NO_OBJECT in LABELS["shape"]
    assert len(LABELS["color"]) >= 5 and len(TEXTURES) >= 4 and len(LABELS["background"]) >= 3
    for v in (*SHAPES, *TEXTURES):
        assert len(v.synonyms) >= 3 and len(v.implicit) >= 3
    assert all(t.artist for t in TEXTURES)


def test_implicit_phrasings_never_name_the_concept():
    for v in (*SHAPES, *TEXTURES):
        for text in v.implicit:
            words = set(text.split())
            assert v.name not in words, (v.name, text)
            for synonym in v.synonyms:
                assert synonym not in text, (synonym, text)


def test_render_is_deterministic_and_seed_dependent():
    scene = Scene("triangle", "red", "striped", "white")
    a, b, c = render(scene, 1), render(scene, 1), render(scene, 2)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_object_colour_dominates_the_object_pixels():
    image = render(Scene("square", "blue", "solid", "white"), 0).astype(int)
    centre = image[12:20, 12:20].reshape(-1, 3).mean(0)
    assert centre[2] > 150 and centre[0] < 100  # blue object on a white background
    empty = render(Scene(domain.NO_OBJECT, "blue", "solid", "black"), 0)
    assert empty.std(axis=(0, 1)).max() < 1.0  # nothing but a flat background


def test_captions_are_true_of_their_scene():
    rng, nrng = random.Random(0), np.random.default_rng(0)
    for _ in range(300):
        scene = sample_scene(nrng)
        text, mentioned = caption(scene, rng)
        for attribute in ("shape", "color", "background"):
            for other in domain.ATTRIBUTES[attribute]:
                if other.name == getattr(scene, attribute):
                    continue
                for phrase in (other.name, *other.synonyms):
                    assert f" {phrase} " not in f" {text} ", (text, phrase)
        assert "shape" in mentioned


def test_evaluation_prompts_use_the_requested_phrasing():
    assert prompt("triangle", "red") == "a red triangle"
    assert prompt("triangle", shape_form="implicit", index=0) == "a yield sign"
    assert prompt("circle", texture="striped", texture_form="artist") == "a circle in the style of tobias renn"
    with pytest.raises(KeyError):
        prompt("hexagon")


def test_tokenizer_keeps_every_domain_word_whole(tmp_path):
    tok = save_tokenizer(tmp_path)
    for word in domain.all_words():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok("a red triangle", padding="max_length", max_length=tok.model_max_length).input_ids
    assert ids[0] == tok.bos_token_id and ids[4] == tok.eos_token_id and ids[-1] == tok.eos_token_id
    assert len(tok("a xylophone", add_special_tokens=False).input_ids) > 2  # unknown words split into pieces


def test_one_scene_sampler_shows_excludes_and_reproduces():
    from erasekit.shapeworld.render import scene_images
    scenes, images = scene_images(12, seed=5, show={"shape": "star"}, p_empty=None)
    assert all(s.shape == "star" for s in scenes) and images.shape == (12, 32, 32, 3)
    again = scene_images(12, seed=5, show={"shape": "star"}, p_empty=None)[1]
    assert np.array_equal(images, again)
    scenes, _ = scene_images(40, seed=1, exclude="striped", p_empty=0.0)
    assert all("striped" not in (s.shape, s.color, s.texture, s.background) for s in scenes)
    # own seed per image: the first images do not depend on how many are drawn
    few, many = scene_images(3, seed=2, render_seed=9)[1], scene_images(6, seed=2, render_seed=9)[1]
    assert np.array_equal(few, many[:3])
    # the default draws as the training data did: sample_scene then render, one generator
    rng = np.random.default_rng(7)
    scene = sample_scene(rng)
    assert np.array_equal(scene_images(1, seed=7)[1][0], render(scene, rng))
