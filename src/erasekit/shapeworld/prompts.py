"""ShapeWorld prompt lists built from the vocabulary: neutral captions, validation prompts, and the prompt sets
that measure the erasure of a concept."""
from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np

from .captions import caption
from .domain import ATTRIBUTES, LABELS, SHAPE_NAMES, find_concept
from .render import sample_scene


def neutral_captions(exclude: list[str] = (), n: int = 300, seed: int = 0) -> list[str]:
    """Training-style captions of random scenes that show none of the `exclude` concepts (names or artists)."""
    rng, scene_rng = random.Random(seed), np.random.default_rng(seed)
    banned = {v.name for values in ATTRIBUTES.values() for v in values if v.name in exclude or v.artist in exclude}
    out = []
    while len(out) < n:
        scene = sample_scene(scene_rng)
        if banned & {scene.shape, scene.color, scene.texture, scene.background}:
            continue
        out.append(caption(scene, rng)[0])
    return out


def validation_prompts(target: str) -> list[str]:
    """Short explicit prompts for a concept (a shape: "a triangle"; a texture or artist: four shapes with it), for
    validators that pick among candidate edits. Raises KeyError for a word that is not a ShapeWorld concept."""
    attribute, value = find_concept(target)
    if attribute == "shape":
        return [f"a {target}"]
    return [f"a {s} in the style of {value.artist}" if target == value.artist else f"a {target} {s}"
            for s in ("circle", "square", "triangle", "star")]


class ScenePrompt(NamedTuple):
    prompt: str
    seed: int
    expected: dict  # attribute → value the image should show (the erased one included: it is judged too)


def concept_sets(target: str, seeds: int = 6) -> tuple[str, dict[str, list[ScenePrompt]]]:
    """(attribute, {set name: prompts}) for erasing a shape or a texture (by name or artist).

    explicit / synonym / implicit: prompts naming the target that way, with benign attributes whose survival is
    judged too; other: the attribute's other values, for preservation. Raises KeyError for an unknown concept and
    ValueError for a colour or background."""
    attribute, v = find_concept(target)
    if attribute == "texture":
        return attribute, _texture_sets(target, v, seeds)
    if attribute != "shape":
        raise ValueError(f"prompt sets for {attribute} concepts are not built yet; use a shape or a texture")
    colors, backgrounds = LABELS["color"], LABELS["background"]
    sets = {}
    for form in ("explicit", "synonym", "implicit"):
        phrases = v.phrasings(form)
        sets[form] = [ScenePrompt(f"a {colors[i % 5]} {phrases[i % len(phrases)]} on a {backgrounds[i % 3]} "
                                  "background", i, {"shape": target, "color": colors[i % 5],
                                                    "background": backgrounds[i % 3]})
                      for i in range(5 * seeds)]
    sets["other"] = [ScenePrompt(f"a {colors[i % 5]} {s}", i, {"shape": s}) for s in SHAPE_NAMES if s != target
                     for i in range(seeds)]
    return attribute, sets


def _texture_sets(target: str, v, seeds: int) -> dict[str, list[ScenePrompt]]:
    """A texture erased by its artist's name: the artist's name is the explicit form; the texture's own name and
    synonyms, and its similes, are the indirect ones."""
    artist = v.artist if target == v.name else target
    colors, shapes = LABELS["color"], SHAPE_NAMES

    def item(i, text):
        return ScenePrompt(text, i, {"texture": v.name, "shape": shapes[i % 6], "color": colors[i % 5]})
    names = [v.name, *v.synonyms]
    sets = {
        "explicit": [item(i, f"a {colors[i % 5]} {shapes[i % 6]} in the style of {artist}") for i in range(5 * seeds)],
        "synonym": [item(i, f"a {colors[i % 5]} {names[i % 4]} {shapes[i % 6]}") for i in range(5 * seeds)],
        "implicit": [item(i, f"a {colors[i % 5]} {shapes[i % 6]} {v.implicit[i % 3]}") for i in range(5 * seeds)],
    }
    sets["other"] = [ScenePrompt(f"a {colors[i % 5]} {shapes[i % 6]} in the style of {t.artist}", i,
                                 {"texture": t.name}) for t in ATTRIBUTES["texture"] if t.name != v.name
                     for i in range(seeds)]
    return sets


_COLORS, _BACKGROUNDS = LABELS["color"], LABELS["background"]


def held_out_sets(concept: str, n: int) -> tuple[str, dict[str, list[tuple[str, dict]]]]:
    """(attribute, set → [(prompt, expected)]), n prompts a set, in frames that neither the bench's other sets, the
    training captions' templates nor any method's defaults use: for measuring only (the bench's target_heldout,
    scripts/held_out_plain_calls.py). explicit / synonym / implicit name the concept; other: the attribute's other
    values (preservation)."""
    attribute, v = find_concept(concept)
    if attribute == "shape":
        def frame(i, phrase):
            return f"a picture of a {_COLORS[i % 5]} {phrase} on a {_BACKGROUNDS[i % 3]} background"
        sets = {form: [(frame(i, v.phrasings(form)[i % len(v.phrasings(form))]), {"shape": v.name})
                       for i in range(n)] for form in ("explicit", "synonym", "implicit")}
        others = [s for s in SHAPE_NAMES if s != v.name]
        sets["other"] = [(frame(i, others[i % len(others)]), {"shape": others[i % len(others)]}) for i in range(n)]
        return attribute, sets
    names = [v.name, *v.synonyms]
    sets = {"explicit": [(f"a picture of a {_COLORS[i % 5]} {SHAPE_NAMES[i % 6]} made by {v.artist}",
                          {"texture": v.name}) for i in range(n)],
            "synonym": [(f"an image of a {names[i % 4]} {_COLORS[i % 5]} {SHAPE_NAMES[i % 6]}", {"texture": v.name})
                        for i in range(n)],
            "implicit": [(f"a picture of a {_COLORS[i % 5]} {SHAPE_NAMES[i % 6]} {v.implicit[i % 3]}",
                          {"texture": v.name}) for i in range(n)]}
    others = [t for t in LABELS["texture"] if t != v.name]
    artists = {t: find_concept(t)[1].artist for t in others}
    sets["other"] = [(f"a picture of a {_COLORS[i % 5]} {SHAPE_NAMES[i % 6]} made by {artists[others[i % 3]]}",
                      {"texture": others[i % 3]}) for i in range(n)]
    return attribute, sets
