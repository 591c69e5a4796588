"""Captions for ShapeWorld scenes: varied templates, attributes sometimes omitted, names/synonyms/implicit forms."""
from __future__ import annotations

import random

from .domain import NO_OBJECT, Scene, value

# How each attribute is named when it is mentioned: explicit name, synonym or implicit phrasing.
FORM_WEIGHTS = {"explicit": 0.55, "synonym": 0.25, "implicit": 0.20}
PREFIXES = ("", "an image of", "a picture of", "a drawing of", "a photo of", "a rendering of")
EMPTY_CAPTIONS = ("an empty {bg} background", "a blank {bg} canvas", "nothing on a {bg} background",
                  "an empty scene", "a blank image")  # the last two leave the background free


def _pick(rng: random.Random, attribute: str, name: str, forms: tuple[str, ...]) -> str:
    v = value(attribute, name)
    candidates = [(f, w) for f, w in FORM_WEIGHTS.items() if f in forms and v.phrasings(f)]
    form = rng.choices([f for f, _ in candidates], weights=[w for _, w in candidates])[0]
    return rng.choice(v.phrasings(form))


def _texture_phrase(rng: random.Random, name: str) -> tuple[str, str]:
    """Return (adjective, suffix): a texture is an adjective, an implicit simile, or an artist's style."""
    v = value("texture", name)
    r = rng.random()
    if r < 0.45:
        return rng.choice((v.name, v.name, *v.synonyms)), ""
    if r < 0.7:
        return "", f"in the style of {v.artist}"
    if r < 0.85:
        return "", rng.choice(v.implicit)
    return "", f"{rng.choice(('painted', 'made', 'drawn'))} by {v.artist}"


def caption(scene: Scene, rng: random.Random, p_mention: float = 0.75) -> tuple[str, frozenset[str]]:
    """A random caption true of `scene`, and the attributes it mentions (omitted ones are left free)."""
    bg_word = _pick(rng, "background", scene.background, ("explicit", "synonym"))
    if scene.shape == NO_OBJECT:
        template = rng.choice(EMPTY_CAPTIONS)
        return template.format(bg=bg_word), frozenset({"shape", "background"} if "{bg}" in template else {"shape"})
    mentioned = {"shape"}
    words = []
    if rng.random() < p_mention:
        words.append(_pick(rng, "color", scene.color, ("explicit", "synonym")))
        mentioned.add("color")
    suffix = ""
    if rng.random() < p_mention:
        adjective, suffix = _texture_phrase(rng, scene.texture)
        words.append(adjective)
        mentioned.add("texture")
    words += [_pick(rng, "shape", scene.shape, ("explicit", "synonym", "implicit")), suffix]
    if rng.random() < p_mention:
        words.append(f"on a {bg_word} background")
        mentioned.add("background")
    text = " ".join(w for w in (rng.choice(PREFIXES), with_article(" ".join(w for w in words if w))) if w)
    return text, frozenset(mentioned)


def with_article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def prompt(shape: str, color: str | None = None, texture: str | None = None, background: str | None = None,
           shape_form: str = "explicit", index: int = 0, texture_form: str = "explicit") -> str:
    """A deterministic prompt for evaluation: the `index`-th phrasing of the shape in `shape_form`."""
    shape_text = value("shape", shape).phrasings(shape_form)[index]
    words = []
    suffix = ""
    if color:
        words.append(color)
    if texture:
        tv = value("texture", texture)
        if texture_form == "explicit":
            words.append(texture)
        elif texture_form == "artist":
            suffix = f"in the style of {tv.artist}"
        else:
            suffix = tv.phrasings(texture_form)[index]
    words += [shape_text, suffix]
    if background:
        words.append(f"on a {background} background")
    return with_article(" ".join(w for w in words if w))
