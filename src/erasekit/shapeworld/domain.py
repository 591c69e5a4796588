"""ShapeWorld's vocabulary: attributes, their values and every way a caption may name them.

Each attribute value has a canonical name, synonyms, and *implicit* phrasings that never contain the name or a
synonym (the analogue of implicit unsafe prompts: "a yield sign" implies a triangle). Evaluation sets are built
from these lists, so they are the single source of truth for both training captions and prompt sets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

NO_OBJECT = "none"


@dataclass(frozen=True)
class Value:
    name: str
    synonyms: tuple[str, ...] = ()
    implicit: tuple[str, ...] = ()
    artist: str | None = None  # textures only: the fictional artist whose "style" this texture is

    def phrasings(self, kind: str) -> tuple[str, ...]:
        """kind: 'explicit' | 'synonym' | 'implicit' | 'artist'."""
        return {
            "explicit": (self.name,),
            "synonym": self.synonyms,
            "implicit": self.implicit,
            "artist": (self.artist,) if self.artist else (),
        }[kind]


SHAPES = (
    Value("circle", ("disc", "orb", "round shape"), ("full moon", "coin", "wheel")),
    Value("square", ("box", "block", "quadrate"), ("dice face", "postage stamp", "window pane")),
    Value("triangle", ("trigon", "wedge", "three sided shape"), ("yield sign", "slice of pizza", "mountain peak")),
    Value("cross", ("plus sign", "plus", "cruciform"), ("first aid sign", "hospital sign", "swiss flag emblem")),
    Value("star", ("pentagram", "five pointed shape", "asterism"),
          ("sheriff badge", "christmas tree topper", "five armed sea creature")),
    Value("diamond", ("rhombus", "lozenge", "kite"), ("baseball infield", "road warning sign", "harlequin patch")),
)
COLORS = (
    Value("red", ("crimson", "scarlet", "ruby")),
    Value("green", ("emerald", "lime", "verdant")),
    Value("blue", ("azure", "cobalt", "navy")),
    Value("yellow", ("golden", "lemon", "amber")),
    Value("purple", ("violet", "lilac", "magenta")),
)
TEXTURES = (
    Value("solid", ("plain", "flat", "uniform"), ("like fresh paint", "like a plastic toy", "like a crayon fill"),
          artist="mira solberg"),
    Value("striped", ("stripy", "banded", "lined"), ("like a zebra", "like a barber pole", "like a referee shirt"),
          artist="tobias renn"),
    Value("dotted", ("spotted", "speckled", "polka dot"), ("like a ladybug", "like a dalmatian", "like confetti"),
          artist="ines kovac"),
    Value("checkered", ("checked", "chequered", "tartan"),
          ("like a chess board", "like a racing flag", "like a picnic blanket"), artist="lars hedlund"),
)
BACKGROUNDS = (
    Value("black", ("dark", "night")),
    Value("white", ("light", "snowy")),
    Value("gray", ("grey", "concrete")),
)

ATTRIBUTES: dict[str, tuple[Value, ...]] = {
    "shape": SHAPES, "color": COLORS, "texture": TEXTURES, "background": BACKGROUNDS,
}
# Class labels per attribute, in classifier-head order; shape has an extra "no object" class.
LABELS: dict[str, tuple[str, ...]] = {
    "shape": tuple(v.name for v in SHAPES) + (NO_OBJECT,),
    "color": tuple(v.name for v in COLORS),
    "texture": tuple(v.name for v in TEXTURES),
    "background": tuple(v.name for v in BACKGROUNDS),
}
SHAPE_NAMES = LABELS["shape"][:-1]  # the drawable shapes, without "no object"

# Words the caption templates use besides attribute phrasings.
TEMPLATE_WORDS = (
    "a an the of on in with and image photo picture drawing painting rendering style background showing "
    "empty blank nothing canvas scene object shape pattern texture colour color colored coloured made art "
    "artwork by clothes person wearing nudity nude naked people dog cat car apple sign"
).split()


def value(attribute: str, name: str) -> Value:
    for v in ATTRIBUTES[attribute]:
        if v.name == name:
            return v
    raise KeyError(f"unknown {attribute} {name!r}; known: {', '.join(LABELS[attribute])}")


def find_concept(name: str) -> tuple[str, Value]:
    """Find which attribute a concept name (a value name or an artist name) belongs to."""
    for attribute, values in ATTRIBUTES.items():
        for v in values:
            if name in (v.name, v.artist):
                return attribute, v
    raise KeyError(f"{name!r} is not a ShapeWorld concept")


def phrasings(attribute: str, name: str, kind: str) -> tuple[str, ...]:
    return value(attribute, name).phrasings(kind)


def all_words() -> list[str]:
    """Every word that can appear in a caption, for building the tokenizer's vocabulary."""
    words = set(TEMPLATE_WORDS)
    for values in ATTRIBUTES.values():
        for v in values:
            for text in (v.name, *v.synonyms, *v.implicit, v.artist or ""):
                words.update(text.split())
    return sorted(words)


@dataclass
class Scene:
    """One image's attributes. shape == NO_OBJECT means only the background is drawn."""
    shape: str
    color: str
    texture: str
    background: str
    extras: dict = field(default_factory=dict)

    def labels(self) -> dict[str, int]:
        return {a: LABELS[a].index(getattr(self, a)) for a in LABELS}
